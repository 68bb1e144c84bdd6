import pytest
import yaml

from tests.conftest import ROOT
from trafficsigns.core.config import Params, load_params, parse_params
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
        ({"model": {"filters": "many"}}, "'model.filters'"),
        ({"data": {"source": "imagenet"}}, "'data.source'"),
    ],
)
def test_bad_params_name_the_key_and_value(raw, expected):
    with pytest.raises(PipelineError, match="invalid params") as err:
        parse_params(raw)
    assert expected in str(err.value)


def test_error_shows_given_value():
    with pytest.raises(PipelineError, match=r"given: 'HSV'"):
        parse_params({"prepare": {"mode": "HSV"}})


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


def test_empty_file_gives_defaults(tmp_path):
    empty = tmp_path / "params.yaml"
    empty.write_text("")
    assert load_params(empty) == Params()
