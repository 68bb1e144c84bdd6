"""Shared fixtures: tiny GTSRB-format archives made by the synthetic generator (real format, seconds)."""

from __future__ import annotations

import os
import shutil
import zipfile
from pathlib import Path

import pytest

from tests import servers
from tests.helpers import make_project, run_stages, tiny_params
from trafficsigns.data.synthetic import write_synthetic_gtsrb


@pytest.fixture(scope="session")
def tiny_raw_master(tmp_path_factory) -> Path:
    raw = tmp_path_factory.mktemp("raw")
    write_synthetic_gtsrb(raw, seed=1, train_tracks_per_class=2, test_tracks_per_class=1, frames_per_track=3, workers=1)
    return raw


@pytest.fixture
def tiny_raw(tiny_raw_master, tmp_path) -> Path:
    """A private copy of the tiny archives, free to be damaged by the test."""
    raw = tmp_path / "data" / "raw"
    shutil.copytree(tiny_raw_master, raw)
    return raw


def rewrite_member(archive: Path, member: str, transform) -> None:
    """Replace one member of a zip by transform(old bytes); transform returning None deletes it."""
    with zipfile.ZipFile(archive) as zf:
        items = [(info, zf.read(info)) for info in zf.infolist()]
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for info, data in items:
            if info.filename == member:
                data = transform(data)
                if data is None:
                    continue
            zf.writestr(info, data)


@pytest.fixture(scope="session")
def tiny_dataset(tiny_raw_master, tmp_path_factory) -> Path:
    """The tiny archives through the real `prepare` stage: a dataset.h5 at 24 px L."""
    project = make_project(tmp_path_factory.mktemp("project"), raw=tiny_raw_master)
    run_stages(project, tiny_params(), "prepare")
    return project / "data" / "prepared" / "dataset.h5"


@pytest.fixture(scope="session")
def tiny_pipeline_repo(tmp_path_factory) -> Path:
    """A throw-away copy of this repo on tiny params after `dvc repro`, everything committed: the reference
    run that the reproducibility, run-cache and remote tests compare against. Slow tests only."""
    from tests.test_pipeline import TINY, copy_repo, sh

    repo = copy_repo(tmp_path_factory.mktemp("reproduced"), TINY)
    (repo.parent / "first-repro.log").write_text(sh(repo, "dvc", "repro").stdout)  # for the tiny pipeline test
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "reproduced")
    return repo


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A real SeaweedFS S3 server on 127.0.0.1 for the whole session (it takes ~25 s to start and stop)."""
    with servers.s3_server(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server


@pytest.fixture(scope="session")
def ssh_server(tmp_path_factory):
    with servers.ssh_server(tmp_path_factory.mktemp("sshd")) as server:
        yield server


@pytest.fixture
def s3_remote(s3_server, request):
    """The S3 server as a DVC remote of one test's own: an empty prefix, the credentials in its config."""
    prefix = f"{request.node.name}-{os.urandom(4).hex()}".replace("[", "-").replace("]", "")
    config = {
        **s3_server["config"],
        "access_key_id": s3_server["env"]["AWS_ACCESS_KEY_ID"],
        "secret_access_key": s3_server["env"]["AWS_SECRET_ACCESS_KEY"],
    }
    return {"url": f"s3://dvc/{prefix}", "config": config}
