"""Byte-reproducible outputs and the run-cache, through DVC on tiny params.

Every output DVC hashes is the same bytes for the same inputs. The wall-clock figures live in
`metrics/timings.json`, a top-level metric and no stage's output, so a fresh copy reproduces `dvc.lock`;
and DVC's run-cache can serve `train` (no `persist` outputs: the resume state lives in data/checkpoints/).
"""

import json
import subprocess

import pytest
import yaml

from tests.helpers import lock
from tests.test_pipeline import TINY, copy_repo, sh
from trafficsigns.core.paths import TRAIN_TIMINGS

pytestmark = pytest.mark.slow


def set_train(repo, **values) -> None:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["train"].update(values)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def git_bytes_added(repo) -> dict:
    """The git objects that the newest experiment's commit adds to HEAD: count and (uncompressed) bytes."""
    refs = sh(repo, "git", "for-each-ref", "--sort=-committerdate", "--format=%(objectname) %(refname)", "refs/exps")
    rows = [line.split() for line in refs.stdout.splitlines()]
    newest = next(sha for sha, ref in rows if not ref.startswith("refs/exps/exec/"))  # exec/: DVC's bookkeeping
    objects = sh(repo, "git", "rev-list", "--objects", newest, "--not", "HEAD").stdout.split("\n")
    names = "".join(line.split(" ")[0] + "\n" for line in objects if line)
    sizes = subprocess.run(
        ["git", "cat-file", "--batch-check=%(objectsize)"], cwd=repo, input=names, capture_output=True, text=True
    ).stdout.split()
    return {"objects": len(sizes), "bytes": sum(map(int, sizes))}


def test_fresh_copy_reproduces_dvc_lock_then_resume_and_run_cache(tiny_pipeline_repo, tmp_path):
    reference = lock(tiny_pipeline_repo)
    assert str(TRAIN_TIMINGS) not in {out["path"] for out in reference["train"]["outs"]}, "no output: no hash"

    # A fresh copy (no DVC cache, no run-cache) runs every stage and gets the same hash for every output.
    repo = copy_repo(tmp_path, TINY)
    first = sh(repo, "dvc", "repro")
    assert "Running stage 'train'" in first.stdout and "Running stage 'report'" in first.stdout
    assert lock(repo) == reference
    assert json.loads((repo / TRAIN_TIMINGS).read_text()) != json.loads(
        (tiny_pipeline_repo / TRAIN_TIMINGS).read_text()
    )
    ours = lock(repo)
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "first run")

    # train.resume through DVC, which deletes train's outputs before it runs: the checkpoints it resumes
    # from are in data/checkpoints/, outside them. One more epoch, with dvclive's step numbering going on.
    resumed = sh(repo, "dvc", "exp", "run", "-S", "train.resume=true", "-S", "train.epochs=3")
    assert "Running stage 'train'" in resumed.stdout
    assert "resuming from data/checkpoints/last.keras after epoch 2" in resumed.stdout + resumed.stderr
    rows = (repo / "metrics/train/plots/metrics/val/accuracy.tsv").read_text().splitlines()
    assert [row.split("\t")[0] for row in rows] == ["step", "0", "1", "2"]
    timings = json.loads((repo / TRAIN_TIMINGS).read_text())
    assert len(timings["per_epoch"]["epoch_seconds"]) == 3
    # Git stays light: the experiment's commit holds params, dvc.lock, metrics and curves, a few kB of
    # text; the model, figures and report went to the DVC cache (about 1 MB of git objects before).
    added = git_bytes_added(repo)
    print(f"one dvc exp run added {added['objects']} git objects, {added['bytes']:,} bytes")
    assert added["bytes"] < 64 * 1024, added

    # Back to the first params: the run-cache restores train (and evaluate and report), nothing re-runs,
    # and the outputs are those of the first run, timings included.
    set_train(repo, resume=False, epochs=TINY["train"]["epochs"])
    again = sh(repo, "dvc", "repro")
    assert "Running stage" not in again.stdout, again.stdout
    assert "Stage 'train' is cached - skipping run, checking out outputs" in again.stdout, again.stdout
    assert lock(repo) == ours
    assert sh(repo, "dvc", "status").stdout.strip() == "Data and pipelines are up to date."
    # Restored, not trained: the timings file still holds the last training's figures (the resumed run's),
    # the only metric that differs from the first run's.
    diff = json.loads(sh(repo, "dvc", "metrics", "diff", "--json").stdout or "{}")
    assert set(diff) == {str(TRAIN_TIMINGS)}, diff
    assert sh(repo, "dvc", "repro").stdout.count("didn't change, skipping") == len(ours)
