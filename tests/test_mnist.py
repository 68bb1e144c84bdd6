"""MNIST in the same pipeline, on a small MNIST-format .npz made here (real MNIST is not reachable offline)."""

import contextlib
import json

import numpy as np
import pytest

from tests.helpers import copy_repo, exp_run, make_params
from tests.test_pipeline import TINY
from trafficsigns.core.errors import PipelineError
from trafficsigns.data.dataset import read_mnist
from trafficsigns.data.download import fetch_all
from trafficsigns.data.h5store import read_dataset
from trafficsigns.data.sources import SOURCES
from trafficsigns.explain.digits import write_mnist_npz

MNIST = SOURCES["mnist"]


@pytest.fixture(scope="module")
def mirror(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mirror")
    write_mnist_npz(folder / "mnist.npz", n_train=600, n_test=200, seed=0)
    return folder


def test_download_verifies_sha256_of_the_official_file(mirror, tmp_path):
    with pytest.raises(PipelineError, match=r"expected sha256 731c5ac6.*, got [0-9a-f]{64}"):
        fetch_all(MNIST.files, tmp_path, mirror=str(mirror), base_url=MNIST.base_url, verify=True)
    assert fetch_all(MNIST.files, tmp_path, mirror=str(mirror), base_url=MNIST.base_url, verify=False)


def test_prepare_writes_the_same_hdf5_layout(mirror, tmp_path):
    from trafficsigns.stages import prepare

    (tmp_path / "data" / "raw").mkdir(parents=True)
    (tmp_path / "data" / "raw" / "mnist.npz").write_bytes((mirror / "mnist.npz").read_bytes())
    with contextlib.chdir(tmp_path):
        prepare.main(make_params({"data": {"source": "mnist"}, "prepare": {"val_fraction": 0.1}}))
    ds = read_dataset(tmp_path / "data" / "prepared" / "dataset.h5")
    assert ds.x["train"].shape[1:] == (28, 28, 1) and ds.x["train"].dtype == np.float32
    assert (len(ds.y["train"]), len(ds.y["val"]), len(ds.y["test"])) == (540, 60, 200)
    assert ds.class_names == [str(d) for d in range(10)]
    assert np.bincount(ds.y["val"]).tolist() == [6] * 10  # stratified, seeded
    assert ds.meta["size"] == 28 and ds.meta["mode"] == "L"


def test_bad_npz_is_named(tmp_path):
    np.savez(tmp_path / "mnist.npz", x_train=np.zeros((3, 28, 28), np.uint8))
    with pytest.raises(PipelineError, match="mnist.npz: missing array\\(s\\) y_train, x_test, y_test"):
        read_mnist(tmp_path / "mnist.npz")
    np.savez(
        tmp_path / "mnist.npz",
        x_train=np.zeros((3, 28, 28), np.uint8),
        y_train=np.array([1, 2, 12]),
        x_test=np.zeros((1, 28, 28), np.uint8),
        y_test=np.array([0]),
    )
    with pytest.raises(PipelineError, match="labels 1..12"):
        read_mnist(tmp_path / "mnist.npz")


@pytest.mark.slow
def test_mnist_exp_run_end_to_end(mirror, tmp_path):
    """Both MNIST models as experiments of one repo: the second restores the data stages from DVC's cache."""
    repo = copy_repo(tmp_path, {"train": TINY["train"]})
    for model in ("mnist_cnn", "dnn"):
        run = exp_run(repo, "data.source=mnist", f"data.mirror={mirror}", "data.verify=false", f"model.name={model}")
        assert "Running stage 'train'" in run.stdout, run.stdout
        metrics = json.loads((repo / "metrics" / "evaluate.json").read_text())["test"]
        assert metrics["images"] == 200 and 0.0 <= metrics["accuracy"] <= 1.0
        assert (repo / "plots" / "evaluate" / "worst_errors.png").exists()
        assert json.loads((repo / "metrics" / "train" / "metrics.json").read_text())["parameters"] > 0
    assert "Running stage 'prepare'" not in run.stdout, "the second model re-prepared the same data"
