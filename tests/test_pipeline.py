"""End to end through DVC, in a throw-away copy of this repo: what a user does, and what CI reproduces."""

import csv
import io
import json
import shutil
import sys

import pytest
import yaml

from tests.helpers import ROOT, copy_repo, exp_run, sh

pytestmark = pytest.mark.slow

TINY = {
    "data": {"synthetic": {"train_tracks_per_class": 2, "test_tracks_per_class": 1, "frames_per_track": 4}},
    "prepare": {"size": 24, "mode": "L"},
    "model": {"name": "mnist_cnn"},
    "train": {"epochs": 2, "batch_size": 32},
}
# Timing figures vary run to run; everything else in the metrics must be reproduced exactly.
TIMING_KEYS = {"epoch_seconds", "images_per_second", "train_seconds"}


def test_tiny_pipeline_through_dvc(tiny_pipeline_repo, tmp_path):
    # The session's reference run (a fresh copy on TINY, `dvc repro`), copied with its cache: one run less.
    first = (tiny_pipeline_repo.parent / "first-repro.log").read_text()
    for stage in ("check", "download", "prepare", "augment", "train", "evaluate", "export", "report"):
        assert f"Running stage '{stage}'" in first
    repo = tmp_path / "repo"
    shutil.copytree(tiny_pipeline_repo, repo, symlinks=True)
    assert (repo / "models" / "best.keras").exists() and (repo / "data" / "prepared" / "dataset.h5").exists()

    again = sh(repo, "dvc", "repro")
    assert "Running stage" not in again.stdout, "nothing changed, yet a stage re-ran"

    metrics = json.loads(sh(repo, "dvc", "metrics", "show", "--json").stdout)
    assert "metrics/evaluate.json" in json.dumps(metrics) and "accuracy" in json.dumps(metrics)

    # A train.* change re-runs train and evaluate only.
    assert json.loads((repo / "metrics" / "export.json").read_text()) == {"enabled": False}

    exp_run(repo, "train.epochs=1", "model.mnist_cnn.filters=4", "export.enabled=true", "train.tensorboard=true")
    assert any((repo / "logs" / "tensorboard").rglob("events.out.tfevents.*")), "no TensorBoard logs"
    rows = list(csv.DictReader(io.StringIO(sh(repo, "dvc", "exp", "show", "--csv").stdout)))
    assert any(row.get("model.mnist_cnn.filters") == "4" and row.get("accuracy") for row in rows), rows
    exports = json.loads((repo / "metrics" / "export.json").read_text())
    assert {"keras", "saved_model", "tflite_float32", "tflite_int8"} <= set(exports)
    assert exports["tflite_int8"]["bytes"] < exports["tflite_float32"]["bytes"]

    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["train"]["learning_rate"] = 0.002
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    partial = sh(repo, "dvc", "repro")
    assert "Running stage 'download'" not in partial.stdout and "Running stage 'prepare'" not in partial.stdout
    assert "Running stage 'train'" in partial.stdout and "Running stage 'evaluate'" in partial.stdout

    # Another model's widths are no dependency of train (dvc.yaml: model.${model.name}); the report lists them.
    params["model"]["v1"]["filters"] = 48
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    other_model = sh(repo, "dvc", "repro")
    assert "Running stage 'train'" not in other_model.stdout and "Running stage 'report'" in other_model.stdout

    plots = sh(repo, "dvc", "plots", "show", "--json")
    assert "confusion" in plots.stdout or "plots/evaluate/confusion.csv" in plots.stdout


def test_typo_in_params_fails_with_one_clear_line(tmp_path):
    repo = copy_repo(tmp_path, TINY)
    text = (repo / "params.yaml").read_text().replace("  epochs:", "  epoch:")
    (repo / "params.yaml").write_text(text)
    result = sh(repo, sys.executable, "-m", "trafficsigns.stages.train", check=False)
    assert result.returncode == 1
    assert "error: invalid params: unknown key 'train.epoch'" in result.stderr


def _comparable(metrics: dict, prefix: str = "") -> dict:
    """Flattened metrics without the timing keys."""
    flat = {}
    for key, value in metrics.items():
        if isinstance(value, dict):
            flat.update(_comparable(value, f"{prefix}{key}."))
        elif key not in TIMING_KEYS:
            flat[prefix + key] = value
    return flat


def test_default_pipeline_reproduces_committed_metrics(tmp_path):
    """CI re-runs the committed default pipeline from scratch and must get the committed metrics.

    Tolerance: 1e-6 absolute on each float. CPU runs are bit-identical for the same host kind (seeded,
    op determinism, oneDNN pinned), so the tolerance only absorbs JSON float formatting.
    """
    repo = copy_repo(tmp_path)
    sh(repo, "dvc", "repro", "--force")
    for name in ("metrics/evaluate.json", "metrics/train/metrics.json"):
        got = _comparable(json.loads((repo / name).read_text()))
        committed = _comparable(json.loads((ROOT / name).read_text()))
        assert got == pytest.approx(committed, abs=1e-6, rel=0), name
