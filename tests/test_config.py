import pytest
import yaml

from tests.helpers import ROOT, make_params, merge, params_dict
from trafficsigns.core.config import load_params, parse_params
from trafficsigns.core.errors import PipelineError


def test_committed_params_are_valid_and_complete():
    """params.yaml names every key the code knows, so `dvc params diff` and `-S` see them all."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    params = parse_params(raw)

    def keys(d, prefix=""):
        return {f"{prefix}{k}" for k, v in d.items()} | {
            k for key, v in d.items() if isinstance(v, dict) for k in keys(v, f"{prefix}{key}.")
        }

    assert keys(raw) == keys(params.model_dump())


@pytest.mark.parametrize(
    "raw, expected",
    [
        ({"prepare": {"sise": 32}}, "unknown key 'prepare.sise'"),
        ({"modle": {}}, "unknown key 'modle'"),
        ({"prepare": {"mode": "HSV"}}, "'prepare.mode'"),
        ({"prepare": {"size": 0}}, "'prepare.size'"),
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
