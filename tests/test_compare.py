"""A 2×2 grid through DVC's queue in a throw-away repo, then `compare` over it; the grid's guards."""

import contextlib
import itertools
import json
import os
import re
import subprocess
import sys
import time

import pytest
import yaml

from tests.helpers import copy_repo, sh, write_params
from tests.test_pipeline import TINY
from trafficsigns.core.errors import PipelineError
from trafficsigns.core.paths import DATASET
from trafficsigns.data.h5store import read_dataset
from trafficsigns.experiments.compare import experiments, pick_baseline, table, write_comparison
from trafficsigns.experiments.grid import check_grid, combinations, hydra_value, read_grid, set_args, workers_alive
from trafficsigns.modeling.ensemble import ensemble_metrics, from_revision, member_path
from trafficsigns.modeling.models import read_model_metadata

GRID = {"model.name": ["mnist_cnn", "dnn"], "prepare.mode": ["L", "RGB"]}
TRIMMED = ("export", "demystify", "report")
TABLE_RULE = "|" + " --- |" * 12


def test_grid_file_expands_and_typos_stop_before_queueing(tmp_path):
    (tmp_path / "grid.yaml").write_text("model.name: [v1, mnist_cnn]\nprepare.image_size: 32\n")
    grid = read_grid(tmp_path / "grid.yaml")
    assert combinations(grid) == [
        {"model.name": "v1", "prepare.image_size": 32},
        {"model.name": "mnist_cnn", "prepare.image_size": 32},
    ]
    assert set_args(grid) == ["-S", "model.name=v1,mnist_cnn", "-S", "prepare.image_size=32"]
    assert [hydra_value(v) for v in (True, None, "", "a,b", "/data/gtsrb-35px")] == [
        "true",
        "null",
        "''",
        "'a,b'",
        "/data/gtsrb-35px",
    ]
    write_params(tmp_path, {"model": {"name": "v1"}})
    check_grid({"model.name": ["v1", "v2", "v3"], "model.v2.filters": [32, 64]}, tmp_path / "params.yaml")
    with pytest.raises(PipelineError, match=r"unknown key 'model.nme'"):
        check_grid({"model.nme": ["v1"]}, tmp_path / "params.yaml")
    with pytest.raises(PipelineError, match=r"'prepare.image_size'.*given: 2"):
        check_grid({"prepare.image_size": [24, 2]}, tmp_path / "params.yaml")


def test_queue_workers_are_watched_through_their_pid_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert not workers_alive()
    pid_file = tmp_path / ".dvc" / "tmp" / "exps" / "celery" / "dvc-exp-worker-1.pid"
    pid_file.parent.mkdir(parents=True)
    pid_file.write_text(str(os.getpid()))
    assert workers_alive()
    zombie = subprocess.Popen(["true"])  # exits at once; not reaped until wait()
    time.sleep(0.5)
    pid_file.write_text(str(zombie.pid))
    assert not workers_alive(), "an exited worker not reaped yet is not alive"
    zombie.wait()
    assert not workers_alive()


def _data(model, mode, accuracy):
    """One commit's data as `dvc exp show --json` gives it."""
    return {
        "timestamp": "2026-12-02T18:30:05",
        "params": {
            "params.yaml": {
                "data": {
                    "data": {"source": "synthetic"},
                    "prepare": {"image_size": 24, "mode": mode},
                    "model": {"name": model},
                    "train": {"epochs": 2},
                }
            }
        },
        "metrics": {
            "metrics/evaluate.json": {"data": {"test": {"accuracy": accuracy, "macro_f1": accuracy / 2}}},
            "metrics/train/metrics.json": {"data": {"parameters": 1234}},
            "metrics/timings.json": {"data": {"train_seconds": 3.0}},
        },
        "outs": {"models/best.keras": {"size": 3 * 2**20}},
    }


def _exp_show(name, model, mode, accuracy, state="success"):
    data = _data(model, mode, accuracy) if state == "success" else None
    return {
        "revs": [{"rev": f"{name}-rev0123", "name": name, "data": data}],
        "executor": {"state": state},
        "name": name,
    }


def test_table_from_exp_show_json_leads_with_the_baseline_and_highlights_the_best():
    exp_show = [
        {"rev": "workspace", "experiments": None},
        {
            "rev": "abc12345",
            "name": "main",
            "data": _data("v1", "L", 0.9),
            "experiments": [
                _exp_show("a", "v1", "L", 0.9),
                _exp_show("b", "dnn", "RGB", 0.95),
                _exp_show("c", "v1", "L", 0, state="queued"),
            ],
        },
    ]
    exps = experiments(exp_show)
    assert [(e.name, e.state, e.evaluated) for e in exps] == [
        ("a", "success", True),
        ("b", "success", True),
        ("c", "queued", False),
    ]
    t = table(exps[:2], pick_baseline(exp_show, None))
    assert t.rows[0][:9] == [
        "baseline: main",
        "abc1234 2026-12-02 18:30",
        "synthetic 24 px L",
        "v1",
        "—",
        "90.00%",
        "—",
        "45.00%",
        "—",
    ]
    assert t.rows[1][:9] == [
        "b",
        "b-rev01 2026-12-02 18:30",
        "synthetic 24 px RGB",
        "dnn",
        "—",
        "95.00%",
        "+5.00 pp",
        "47.50%",
        "+2.50 pp",
    ]
    assert t.rows[1][-3:] == ["3", "1,234", "3.0"] and t.bold == {(1, 0), (1, 5)}
    assert table(exps[:2], pick_baseline(exp_show, "a")).rows[1][6] == "+5.00 pp"
    with pytest.raises(PipelineError, match="no experiment or baseline commit named nope"):
        pick_baseline(exp_show, "nope")


@pytest.mark.slow
def test_a_2x2_grid_runs_through_the_queue_and_compare_shows_4_rows(tmp_path):
    repo = copy_repo(tmp_path, TINY)
    # Only what `compare` reads (train and evaluate): each queued run costs its stages' TensorFlow start-ups.
    pipeline = yaml.safe_load((repo / "dvc.yaml").read_text())
    for stage in TRIMMED:
        pipeline["stages"].pop(stage, None)
    (repo / "dvc.yaml").write_text(yaml.safe_dump(pipeline, sort_keys=False))
    sh(repo, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "up to evaluate")
    (repo / "grid.yaml").write_text(yaml.safe_dump(GRID))
    grid = [sys.executable, "-m", "trafficsigns", "grid", "--start", "-j", "1", "--wait"]

    (repo / "trafficsigns" / "helper.py").write_text("X = 1\n")
    refused = sh(repo, *grid, check=False)
    assert refused.returncode == 1 and "trafficsigns/helper.py (untracked)" in refused.stderr, refused.stderr
    (repo / "trafficsigns" / "helper.py").unlink()

    started = time.monotonic()
    queued = sh(repo, *grid)
    print(queued.stderr, f"2x2 grid through the queue: {time.monotonic() - started:.0f} s", sep="\n")

    sh(repo, sys.executable, "-m", "trafficsigns", "compare")
    markdown = (repo / "reports" / "compare.md").read_text()
    lines = markdown.splitlines()
    rows = list(itertools.takewhile(lambda line: line.startswith("| "), lines[lines.index(TABLE_RULE) + 1 :]))
    assert len(rows) == 5, markdown  # the baseline's, then the 4 experiments'
    cells = [[c.strip(" *") for c in row.strip("|").split("|")] for row in rows]
    assert cells[0][0].startswith("baseline: ")  # the copy's commit, with the committed metrics/evaluate.json
    assert sorted((c[3], c[2]) for c in cells[1:]) == sorted(
        (m, f"synthetic 24 px {mode}") for m in GRID["model.name"] for mode in GRID["prepare.mode"]
    )
    assert all(re.fullmatch(r"\d+\.\d\d%", c[5]) and re.fullmatch(r"[+-]\d+\.\d\d pp|—", c[6]) for c in cells[1:])
    assert (repo / "reports" / "compare" / "val_accuracy.png").exists()
    page = (repo / "reports" / "compare.html").read_text()
    assert "http://" not in page and "https://" not in page and page.count("data:image/png;base64,") == 1

    # An experiment name is an ensemble member: its best model comes out of the DVC cache, and a member
    # prepared otherwise (L beside an RGB experiment's dataset) is fed its own experiment's test images, so each
    # member scores what its own run's evaluate measured.
    exp_show = json.loads(sh(repo, "dvc", "exp", "show", "--json").stdout)
    dnn = {e.params["prepare.mode"]: e for e in experiments(exp_show) if e.params["model.name"] == "dnn"}
    with contextlib.chdir(repo):
        assert read_model_metadata(member_path(dnn["L"].name, tmp_path))["model"]["name"] == "dnn"
        with pytest.raises(PipelineError, match="neither a model file nor an experiment"):
            member_path("exp-that-never-was", tmp_path)
        names = (dnn["L"].name, dnn["RGB"].name)
        rgb = read_dataset(from_revision(names[1], DATASET, tmp_path / "rgb.h5"), splits=("test",))
        assert rgb.meta["mode"] == "RGB"
        members = ensemble_metrics(names, rgb, 64)["ensemble"]["members"]
    for exp in dnn.values():
        assert members[exp.name]["test"]["accuracy"] == pytest.approx(exp.test["accuracy"], abs=1e-12)
    with pytest.raises(PipelineError, match="no experiment named nope"):
        write_comparison(
            experiments(exp_show),
            ["nope"],
            html_path=tmp_path / "c.html",
            md_path=tmp_path / "c.md",
            images_dir=tmp_path,
        )
