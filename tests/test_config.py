from pathlib import Path

import pytest
import yaml

from tests.helpers import ROOT, make_params, merge, params_dict
from trafficsigns.core.config import load_params, parse_params
from trafficsigns.core.errors import PipelineError


def keys(d: dict, prefix: str = "") -> set[str]:
    """Every key of a nested mapping, dotted: `prepare.mode`."""
    return {f"{prefix}{k}" for k in d} | {
        k for key, v in d.items() if isinstance(v, dict) for k in keys(v, f"{prefix}{key}.")
    }


def test_committed_params_are_valid_and_complete():
    """params.yaml names every key the code knows, so `dvc params diff` and `-S` see them all."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    params = parse_params(raw)
    assert keys(raw) == keys(params.as_yaml())


def test_no_parameter_is_named_as_dvc_file_metadata():
    """DVC drops keys named `size` and `nfiles` from its run-cache key, params included (treeverse/dvc#10296):
    a parameter so named would be invisible to the run-cache, and changing it alone would restore the
    outputs of a run with another value (it did: `-S prepare.size=48` brought back 32 px data)."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert not {key.rsplit(".", 1)[-1] for key in keys(raw)} & {"size", "nfiles"}
    with pytest.raises(PipelineError, match=r"'prepare.size' is now 'prepare.image_size'"):
        make_params({"prepare": {"size": 32}})


@pytest.mark.parametrize(
    "raw, expected",
    [
        ({"prepare": {"sise": 32}}, "unknown key 'prepare.sise'"),
        ({"modle": {}}, "unknown key 'modle'"),
        ({"prepare": {"mode": "HSV"}}, "'prepare.mode'"),
        ({"prepare": {"image_size": 0}}, "'prepare.image_size'"),
        ({"train": {"epochs": -1}}, "'train.epochs'"),
        ({"model": {"v1": {"filters": "many"}}}, "'model.v1.filters'"),
        ({"model": {"resnet": {"dense": 512}}}, "unknown key 'model.resnet.dense'"),
        ({"model": {"filters": 32}}, "unknown key 'model.filters'"),
        ({"data": {"source": "imagenet"}}, "'data.source'"),
    ],
)
def test_bad_params_name_the_key_and_value(raw, expected):
    with pytest.raises(PipelineError, match="invalid params") as err:
        make_params(raw)
    assert expected in str(err.value)


def test_error_shows_given_value():
    with pytest.raises(PipelineError, match=r"given: 'HSV'"):
        make_params({"prepare": {"mode": "HSV"}})


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(PipelineError, match="no such params file"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "params.yaml"
    bad.write_text("data: [unclosed")
    with pytest.raises(PipelineError, match="not valid YAML"):
        load_params(bad)
    bad.write_text("- a\n- b\n")
    with pytest.raises(PipelineError, match="expected a mapping"):
        load_params(bad)


def test_code_holds_no_defaults_every_key_is_required(tmp_path):
    """params.yaml is the only source of defaults: a file without a key is refused, the key named."""
    empty = tmp_path / "params.yaml"
    empty.write_text("")
    with pytest.raises(PipelineError) as err:
        load_params(empty)
    assert str(err.value).startswith("invalid params: 'data', 'prepare', 'augment', 'model', 'train', ")
    assert str(err.value).endswith(
        "are missing (params.yaml must set every key; see the committed params.yaml)"
    ) and "\n" not in str(err.value)

    def without(*dotted: str) -> dict:
        raw = params_dict()
        for name in dotted:
            *sections, key = name.split(".")
            tree = raw
            for section in sections:
                tree = tree[section]
            del tree[key]
        return raw

    for key in ("train.epochs", "model.resnet.filters", "data.synthetic.frames_per_track", "prepare.mode"):
        with pytest.raises(PipelineError) as err:
            parse_params(without(key))
        assert str(err.value) == (
            f"invalid params: '{key}' is missing (params.yaml must set every key; see the committed params.yaml)"
        )
    with pytest.raises(PipelineError, match=r"^invalid params: unknown key 'train.epoch' \(a typo\?\); "):
        parse_params(merge(without("train.epochs", "model.v1"), {"train": {"epoch": 5}}))
    with pytest.raises(PipelineError, match=r"'model.v1', 'train.epochs' are missing \(params.yaml must"):
        parse_params(without("train.epochs", "model.v1"))


def test_every_model_has_its_own_widths():
    params = make_params({"model": {"name": "v1", "v2": {"filters": 8}}})
    assert params.model.chosen() == {"name": "v1", "conv_dropout": 0.2, "filters": 96, "dense": 1500, "dropout": 0.5}
    assert make_params({"model": {"name": "v2", "v2": {"filters": 8}}}).model.widths()["filters"] == 8
    assert make_params({"model": {"name": "resnet"}}).model.widths() == {"filters": 32, "dropout": 0.3}
    assert make_params({"model": {"name": "dnn"}}).model.widths() == {"dense": 100}


@pytest.mark.parametrize(
    "raw, expected",
    [
        ({"prepare": {"seed": -1}}, "'prepare.seed': Input should be greater than or equal to 0"),
        ({"train": {"seed": 2**32}}, "'train.seed'"),
        ({"data": {"seed": -5}}, "'data.seed'"),
        ({"data": {"synthetic": {"train_tracks_per_class": float("inf")}}}, "finite number"),
        ({"data": {"synthetic": {"test_tracks_per_class": float("nan")}}}, "finite number"),
        ({"data": {"synthetic": {"train_tracks_per_class": 1e9}}}, "less than or equal to 1000"),
        ({"train": {"learning_rate": float("nan")}}, "'train.learning_rate'"),
        ({"data": {"deadline": 0}}, "'data.deadline'"),
    ],
)
def test_seeds_and_non_finite_numbers_are_refused_by_key(raw, expected):
    """-1 as a seed, `.inf` or `.nan` for a float: one line naming the key, not a traceback from NumPy later."""
    with pytest.raises(PipelineError, match="invalid params") as err:
        make_params(raw)
    assert expected in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    "mirror",
    ["data/raw", "./data/raw/", "data/raw/zips", "plots/data", "{root}/data/raw", "file://{root}/data/raw", "models"],
)
def test_a_mirror_inside_a_stage_output_is_refused(tmp_path, monkeypatch, mirror):
    """DVC empties a stage's outputs before it runs: a mirror there would lose the user's archives.
    Every stage validates params first, so the one that would read or delete it stops."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data" / "raw").mkdir(parents=True)
    with pytest.raises(PipelineError, match=r"'data\.mirror'.* a folder the pipeline writes"):
        make_params({"data": {"mirror": mirror.format(root=tmp_path)}})


def test_a_symlink_into_a_stage_output_is_refused_and_other_mirrors_pass(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data" / "raw").mkdir(parents=True)
    (tmp_path / "zips").symlink_to(tmp_path / "data" / "raw")
    with pytest.raises(PipelineError, match="inside data/raw"):
        make_params({"data": {"mirror": "zips"}})
    for fine in ("", "https://example.org/data/raw/", str(tmp_path / "elsewhere"), "data/rawer", "data/downloads"):
        assert make_params({"data": {"mirror": fine}}).data.mirror == fine


def test_stage_outputs_cover_every_dvc_out():
    """data.mirror's refusal knows every folder DVC empties: each of dvc.yaml's outs lies under STAGE_OUTPUTS."""
    from trafficsigns.core.paths import STAGE_OUTPUTS

    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    outs = [
        next(iter(out)) if isinstance(out, dict) else out
        for stage in stages.values()
        for section in ("outs", "metrics", "plots")
        for out in stage.get(section) or []
    ]
    assert outs and all(any(Path(out).is_relative_to(folder) for folder in STAGE_OUTPUTS) for out in outs), outs
