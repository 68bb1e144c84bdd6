"""The prepare stage on real-format archives: the HDF5 a user trains from, and what it refuses."""

import subprocess
import sys
import zipfile

import numpy as np

from tests.conftest import rewrite_member
from tests.helpers import ROOT, TINY_PARAMS, write_params
from trafficsigns.data.archives import TRAIN_DIR, TRAIN_ZIP
from trafficsigns.data.dataset import split_by_track
from trafficsigns.data.h5store import read_dataset


def test_dataset_layout_and_values(tiny_dataset):
    ds = read_dataset(tiny_dataset)
    for split in ("train", "val", "test"):
        x, y = ds.x[split], ds.y[split]
        assert x.dtype == np.float32 and x.shape[1:] == (24, 24, 1) and len(x) == len(y) > 0
        assert 0.0 <= x.min() and x.max() <= 1.0
    assert len(ds.class_names) == 43 and ds.class_names[14] == "Stop"
    meta = ds.meta
    assert meta["size"] == 24 and meta["mode"] == "L" and meta["source"] == "synthetic"
    assert set(meta["inputs_md5"]) == {
        "GTSRB_Final_Training_Images.zip",
        "GTSRB_Final_Test_Images.zip",
        "GTSRB_Final_Test_GT.zip",
    }
    assert meta["counts"] == {s: len(ds.y[s]) for s in ("train", "val", "test")}


def test_validation_is_split_by_track(tiny_dataset):
    ds = read_dataset(tiny_dataset, splits=("train", "val"))
    assert not set(ds.tracks["train"]) & set(ds.tracks["val"]), "a physical sign is in both train and val"
    assert set(ds.y["val"]) == set(range(43))  # every class with 2+ tracks gives one to val


def test_split_by_track_fraction_and_seed():
    tracks = np.repeat(np.arange(10), 30)  # one class, 10 tracks of 30 frames
    labels = np.zeros_like(tracks)
    val = split_by_track(tracks, labels, 0.2, seed=0)
    assert val.sum() == 60 and len(np.unique(tracks[val])) == 2
    assert np.array_equal(val, split_by_track(tracks, labels, 0.2, seed=0))
    assert not np.array_equal(val, split_by_track(tracks, labels, 0.2, seed=1))


def run_stage(stage: str, cwd, params: dict) -> subprocess.CompletedProcess:
    write_params(cwd, params)
    return subprocess.run(
        [sys.executable, "-m", f"trafficsigns.stages.{stage}"],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        timeout=300,
    )


def test_unknown_mode_fails_before_any_work(tiny_raw):
    project = tiny_raw.parent.parent
    result = run_stage("prepare", project, {"prepare": {"mode": "HSV"}})
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("error: invalid params: 'prepare.mode'")
    assert not (project / "data" / "prepared").exists()


def test_undecodable_image_leaves_no_output(tiny_raw):
    with zipfile.ZipFile(tiny_raw / TRAIN_ZIP) as zf:
        victim = next(n for n in zf.namelist() if n.startswith(f"{TRAIN_DIR}/00005/") and n.endswith(".ppm"))
    rewrite_member(tiny_raw / TRAIN_ZIP, victim, lambda data: data[:20])
    project = tiny_raw.parent.parent
    result = run_stage("prepare", project, TINY_PARAMS)
    assert result.returncode == 1
    assert f"{victim}: image does not decode" in result.stderr
    assert "Traceback" not in result.stderr
    prepared = project / "data" / "prepared"
    assert not prepared.exists() or not any(prepared.iterdir()), "a half-written dataset was left behind"
