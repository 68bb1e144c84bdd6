"""grid.yaml through a real Slurm (slurmctld + slurmd started here, one node), never a mock.

Debian's slurmctld, slurmd and slurm-client run in the foreground without munge (auth/none), with a
fresh state folder per test (job ids restart at 1, so each test has a fresh submitting repo too).
"""

import getpass
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.test_pipeline import TINY, copy_repo, sh
from trafficsigns.experiments.slurm import Resources, data_configs, data_keys, rows_arg

PACKAGES = "slurmctld slurmd slurm-client"
TRIMMED = ("export", "demystify", "report")  # not what the rows are about; each costs a TensorFlow start-up
# 4 rows: the 2 synthetic ones train (the mirror is ignored), the 2 gtsrb ones fail at download (no such mirror).
GRID = {
    "data.source": ["synthetic", "gtsrb"],
    "data.mirror": ["/nonexistent/mirror"],
    "model.name": ["mnist_cnn", "dnn"],
}
GOOD, BROKEN = {0, 1}, {2, 3}


def _daemons_or_skip() -> None:
    if all(shutil.which(d, path=f"{os.environ['PATH']}:/usr/sbin:/sbin") for d in ("slurmctld", "slurmd", "sbatch")):
        return
    message = f"Slurm is not installed: apt-get install -y {PACKAGES}"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(message + " (CI must run this test; .ci/run installs them)")
    pytest.skip(message)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def slurm(tmp_path):
    """A one-node cluster on this machine; yields the environment every client command needs."""
    _daemons_or_skip()
    root = tmp_path / "slurm"
    (root / "state").mkdir(parents=True)
    (root / "spool").mkdir()
    host = socket.gethostname().split(".")[0]
    user = getpass.getuser()
    conf = root / "slurm.conf"
    conf.write_text(
        f"""ClusterName=test
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser={user}
SlurmdUser={user}
AuthType=auth/none
CredType=cred/none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
SlurmdParameters=config_overrides
GresTypes=gpu
NodeName={host} NodeAddr=127.0.0.1 CPUs=2 RealMemory=8000 Gres=gpu:1 State=UNKNOWN
PartitionName=test Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""
    )
    (root / "gres.conf").write_text(f"NodeName={host} Name=gpu File=/dev/null\n")
    env = {**os.environ, "SLURM_CONF": str(conf), "PATH": f"{os.environ['PATH']}:/usr/sbin:/sbin"}
    overrides = {k: env[k] for k in ("SLURM_CONF", "PATH")}
    started = time.monotonic()
    daemons = []
    try:
        for daemon in ("slurmctld", "slurmd"):
            out = open(root / f"{daemon}.stdout", "w")
            daemons.append(subprocess.Popen([daemon, "-D", "-f", str(conf)], env=env, stdout=out, stderr=out))
            if daemon == "slurmctld":
                _until(lambda: _ok(["scontrol", "ping"], env), 30, root, "slurmctld answers", daemons)
        _until(lambda: "idle" in _out(["sinfo", "-h", "-o", "%t"], env), 60, root, "the node is idle", daemons)
        print(f"cluster start: {time.monotonic() - started:.1f} s")
        yield overrides  # what every client command needs on top of the environment of the moment
    finally:
        for process in reversed(daemons):
            process.terminate()
        for process in daemons:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _ok(command, env) -> bool:
    return subprocess.run(command, env=env, capture_output=True, stdin=subprocess.DEVNULL).returncode == 0


def _out(command, env) -> str:
    return subprocess.run(command, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL).stdout


def _until(condition, seconds, root, what, daemons) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline or any(d.poll() is not None for d in daemons):
            logs = "\n".join(f"--- {p.name}\n{p.read_text()[-2000:]}" for p in sorted(root.glob("*.log")))
            raise AssertionError(f"gave up waiting until {what} (or a daemon exited)\n{logs}")
        time.sleep(0.3)


def _in(repo: Path, env: dict, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """A command in the submitting repo, with the cluster's SLURM_CONF and this venv's python first."""
    path = f"{Path(sys.executable).parent}:{env['PATH']}"
    result = subprocess.run(
        args,
        cwd=repo,
        capture_output=True,
        text=True,
        env={**os.environ, **env, "PATH": path, "DVC_NO_ANALYTICS": "1"},
        stdin=subprocess.DEVNULL,
    )
    if check and result.returncode:
        raise AssertionError(f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def _tiny_repo(tmp_path: Path) -> Path:
    repo = copy_repo(tmp_path / "repo", {**TINY, "train": {"epochs": 1, "batch_size": 32}})
    pipeline = yaml.safe_load((repo / "dvc.yaml").read_text())
    for stage in TRIMMED:
        pipeline["stages"].pop(stage, None)
    (repo / "dvc.yaml").write_text(yaml.safe_dump(pipeline, sort_keys=False))
    (repo / "grid.yaml").write_text(yaml.safe_dump(GRID))
    sh(repo, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "a tiny grid")
    return repo


@pytest.fixture(params=["shared-cache", "remote"])
def dvc_remote(request, tmp_path):
    """Where the tasks' outputs go: None for a shared cache folder, else {"url": ..., "config": {option: value}},
    a DVC remote (`dvc remote add -d` + `dvc remote modify` in the repo's .dvc/config.local).

    "remote" is the S3 server of the `s3_remote` fixture when there is one (same shape, an empty bucket
    path of its own), else a local-folder remote: the same code path in the tasks, without a server.
    """
    if request.param == "shared-cache":
        return None
    try:
        return request.getfixturevalue("s3_remote")
    except pytest.FixtureLookupError:
        pass
    store = tmp_path / "dvc-remote"
    store.mkdir()
    return {"url": str(store), "config": {}}


def test_data_configs_and_sbatch_options():
    keys = data_keys(GRID, Path(__file__).resolve().parents[1] / "dvc.yaml")
    assert keys == ["data.source", "data.mirror"]
    combos = [dict(zip(GRID, v)) for v in [("synthetic", "/m", "a"), ("synthetic", "/m", "b"), ("gtsrb", "/m", "a")]]
    assert data_configs(combos, keys) == [
        {"data.source": "synthetic", "data.mirror": "/m"},
        {"data.source": "gtsrb", "data.mirror": "/m"},
    ]
    assert Resources().sbatch_options() == ["--cpus-per-task=2", "--mem=8G", "--time=02:00:00"]
    assert "--gres=gpu:2" in Resources(gpus=2).sbatch_options()
    assert rows_arg("0,3,5-7") == [0, 3, 5, 6, 7]


@pytest.mark.slow
def test_grid_on_slurm_every_good_row_comes_back_a_broken_one_is_reported(slurm, dvc_remote, tmp_path):
    repo = _tiny_repo(tmp_path)
    submit = [sys.executable, "-m", "trafficsigns", "grid", "--slurm", "--cpus", "1", "--mem", "2G", "--time", "10"]
    if dvc_remote is None:
        submit += ["--cache", str(tmp_path / "shared-cache")]
    else:
        _in(repo, slurm, "dvc", "remote", "add", "--local", "-d", "team", dvc_remote["url"])
        for key, value in dvc_remote["config"].items():
            _in(repo, slurm, "dvc", "remote", "modify", "--local", "team", key, value)

    gpu = Resources(cpus=1, mem="1G", gpus=1).sbatch_options()  # a GPU request the node accepts (gres.conf)
    assert "to start at" in _in(repo, slurm, "sbatch", "--test-only", *gpu, "--wrap", "true").stderr

    (repo / "trafficsigns" / "helper.py").write_text("X = 1\n")
    refused = _in(repo, slurm, *submit, check=False)
    assert refused.returncode == 1 and "trafficsigns/helper.py (untracked)" in refused.stderr, refused.stderr
    (repo / "trafficsigns" / "helper.py").unlink()

    started = time.monotonic()
    done = _in(repo, slurm, *submit, "--wait", check=False)
    wall = time.monotonic() - started
    folder = next((repo / "logs" / "slurm").iterdir())
    record = json.loads((folder / "submission.json").read_text())
    logs = "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(folder.glob("*.out")))
    assert done.returncode == 1, f"{done.stdout}\n{done.stderr}\n{logs}"
    lines = dict(line.split("  ", 1) for line in done.stdout.splitlines() if line.startswith("row "))
    for row in GOOD:
        assert lines[f"row {row}"].startswith(f"grid-{record['row_job']}-{row}  done"), f"{done.stdout}\n{logs}"
    for row in BROKEN:
        assert f"failed  exit 255, see {folder / f'row-{row}.out'}" in lines[f"row {row}"], done.stdout  # dvc's 255
        assert "check data.mirror" in (folder / f"row-{row}.out").read_text()
    assert "--rows 2,3" in done.stderr

    # Download, prepare and augment ran once, in the data job; every row restored them from the run-cache.
    assert "Running stage 'prepare'" in (folder / "data-0.out").read_text()
    for row in GOOD:
        text = (folder / f"row-{row}.out").read_text()
        for stage in ("download", "prepare", "augment"):
            assert f"Stage '{stage}' is cached - skipping run" in text, text
        assert "Running stage 'train'" in text

    # Both experiments are here with their metrics, and their models come back from the cache or remote.
    exps = json.loads(_in(repo, slurm, "dvc", "exp", "show", "--json").stdout)
    from trafficsigns.experiments.compare import experiments

    found = {e.name: e for e in experiments(exps)}
    names = {record["rows"][str(r)] for r in GOOD}
    assert names <= set(found), found.keys()
    assert {found[n].params["model.name"] for n in names} == {"mnist_cnn", "dnn"}
    assert all(0 <= found[n].metrics["metrics/evaluate.json"]["test"]["accuracy"] <= 1 for n in names)
    name = sorted(names)[0]
    if dvc_remote is None:  # the default shared cache is the repo's own; this one is elsewhere
        _in(repo, slurm, "dvc", "cache", "dir", "--local", str(tmp_path / "shared-cache"))
        _in(repo, slurm, "dvc", "exp", "apply", name)
    else:  # exp apply checks the outputs out too and fails (255) when they are only on the remote, yet
        _in(repo, slurm, "dvc", "exp", "apply", name, check=False)  # applies the experiment's files
        _in(repo, slurm, "dvc", "pull", "train")
    assert yaml.safe_load((repo / "params.yaml").read_text())["model"]["name"] == found[name].params["model.name"]
    assert (repo / "models" / "best.keras").stat().st_size > 0

    tasks = {p.stem: [int(w) for w in p.read_text().split()] for p in sorted(folder.glob("*.status"))}
    took = ", ".join(f"{task} {end - start} s" for task, (_, end, start) in tasks.items())
    where = "shared cache" if dvc_remote is None else f"remote {dvc_remote['url']}"
    print(f"{where}: submit to last row {wall:.0f} s; tasks: {took}")
