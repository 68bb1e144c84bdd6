"""`python -m trafficsigns grid`: queue every combination of the values in grid.yaml as a DVC experiment.

    dvc exp run --queue -S model.name=v1,mnist_cnn -S prepare.mode=L,RGB ...   (one experiment each)
    dvc queue start -j N                                                      (with --start)

Guards against DVC's queue pitfalls: a queued run works in a copy of the last commit plus the tracked
changes, so an untracked source file is invisible to it (it fails, or silently runs old code), and a
result should name the code it came from: sources must be committed first. Every combination is
validated as params before anything is queued, so a typo stops here rather than in N failed runs.
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import itertools
import json
import logging
import math
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

from trafficsigns.core.config import parse_params, read_yaml
from trafficsigns.core.errors import PipelineError
from trafficsigns.core.paths import GRID_FILE, QUEUE_LOG
from trafficsigns.core.shell import at_least
from trafficsigns.experiments.slurm import Resources, rows_arg

log = logging.getLogger(__name__)
SOURCES = ("*.py", "dvc.yaml", "params.yaml", "pyproject.toml", "requirements.lock")
MAX_COMBINATIONS = 10_000  # each one is a training run
WORKER_DIR = Path(".dvc/tmp/exps/celery")  # DVC 3: `dvc queue start` writes its workers' pid files here


def read_grid(path: Path = GRID_FILE) -> dict[str, list]:
    """{"model.name": ["v1", "mnist_cnn"], ...}; a single value is a list of one (fixed for the whole grid)."""
    raw = read_yaml(path, "grid")
    if not isinstance(raw, dict) or not raw:
        raise PipelineError(
            f"{path}: expected a mapping of params keys to lists of values, e.g. 'model.name: [v1, v2]'"
        )
    grid = {str(k): v if isinstance(v, list) else [v] for k, v in raw.items()}
    empty = [k for k, v in grid.items() if not v]
    if empty:
        raise PipelineError(f"{path}: no values for {', '.join(empty)}")
    size = math.prod(len(v) for v in grid.values())
    if size > MAX_COMBINATIONS:  # before itertools.product lists them all (10 keys of 10 values: 10**10)
        raise PipelineError(f"{path}: {size} combinations, over the limit of {MAX_COMBINATIONS}; split the grid")
    return grid


def combinations(grid: dict[str, list]) -> list[dict]:
    return [dict(zip(grid, values)) for values in itertools.product(*grid.values())]


def _set(tree: dict, dotted: str, value) -> None:
    *sections, key = dotted.split(".")
    for name in sections:
        tree = tree.setdefault(name, {})
        if not isinstance(tree, dict):
            raise PipelineError(f"grid key {dotted!r}: {name!r} is not a section")
    tree[key] = value


def check_grid(grid: dict[str, list], params_path: Path = Path("params.yaml")) -> None:
    """Each combination applied to params.yaml must be valid params (the same check every stage makes)."""
    base = read_yaml(params_path, "params") or {}
    for combo in combinations(grid):
        params = json.loads(json.dumps(base))  # a deep copy
        for key, value in combo.items():
            _set(params, key, value)
        try:
            parse_params(params)
        except PipelineError as exc:
            raise PipelineError(f"grid combination {combo}: {exc}") from None


def dirty_sources(cwd: Path | None = None) -> list[str]:
    """Untracked or modified source files, which a queued experiment would not see as committed."""
    result = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all"],
        cwd=cwd,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    if result.returncode:
        raise PipelineError(f"git status failed: {result.stderr.strip()} (a grid runs in a git repository)")
    dirty = []
    for line in result.stdout.splitlines():
        status, path = line[:2], line[3:].split(" -> ")[-1].strip('"')
        if any(fnmatch.fnmatch(Path(path).name, pattern) for pattern in SOURCES):
            dirty.append(f"{path} ({'untracked' if status == '??' else 'modified'})")
    return dirty


_BARE = re.compile(r"[A-Za-z_/][A-Za-z0-9_./-]*")
_HYDRA_WORDS = {"true", "false", "null", "inf", "nan"}  # what Hydra reads as a bool, None or float, any case


def hydra_value(value) -> str:
    """A value as `dvc exp run -S key=...` parses it (Hydra's override grammar), back to the same value and type.

    A string is left bare only if Hydra reads it back as that string (`v1`, `/data/gtsrb-35px`); any other is
    quoted, so `"true"`, `"null"` or `"1e3"` stay strings, and inside the quotes a quote, the backslashes
    just before a quote or the end, and `${` (an interpolation to Hydra) are escaped (an apostrophe in
    `/data/O'Brien` made DVC refuse the grid). Lists and mappings are written element by element.
    """
    if isinstance(value, bool) or value is None:
        return json.dumps(value)  # true, false, null
    if isinstance(value, (int, float)):
        return str(value)  # inf and nan read back as floats too
    if isinstance(value, list):
        return "[" + ",".join(hydra_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{hydra_value(str(k))}:{hydra_value(v)}" for k, v in value.items()) + "}"
    text = str(value)
    if _BARE.fullmatch(text) and text.lower() not in _HYDRA_WORDS:
        return text
    text = re.sub(r"(\\+)(?='|$|\$\{)", lambda m: m[1] * 2, text)  # backslashes before ' or ${ or the end
    return "'" + text.replace("'", "\\'").replace("${", "\\${") + "'"


def set_args(combo_or_grid: dict) -> list[str]:
    """-S key=v1,v2 for a grid (DVC expands the sweep), -S key=v for one combination."""
    args = []
    for key, values in combo_or_grid.items():
        values = values if isinstance(values, list) else [values]
        args += ["-S", f"{key}={','.join(hydra_value(v) for v in values)}"]
    return args


def dvc(*args: str, log_file: Path | None = None) -> str:
    """Run dvc with stdin closed; `dvc queue start` can hang with its output piped, so it gets a log file."""
    command = ["dvc", *args]
    log.info("%s", shlex.join(command))
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(log_file, "a") as out:
            result = subprocess.run(command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        output = f"see {log_file}"
    else:
        result = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, text=True)
        output = (result.stdout + result.stderr).strip()
    if result.returncode:
        raise PipelineError(f"`{shlex.join(command)}` failed: {output}")
    return output


def queue_states() -> dict[str, int]:
    """How many experiments are queued, running, failed, done (from `dvc exp show --json`)."""
    from trafficsigns.experiments.compare import dvc_exp_show, experiments

    counts: dict[str, int] = {}
    for exp in experiments(dvc_exp_show(timeout=300)):
        counts[exp.state] = counts.get(exp.state, 0) + 1
    return counts


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    stat = Path(f"/proc/{pid}/stat")  # Linux: an exited process its parent has not reaped yet is a zombie
    return not (stat.exists() and stat.read_text().rsplit(")", 1)[-1].split()[0] == "Z")


def workers_alive() -> bool:
    """Is a queue worker still running? Told by its pid file, without asking the worker: `dvc queue status`
    and `dvc exp show` send it messages through the file-system broker, and here a worker crashed reading
    one half-written (JSONDecodeError), leaving the rest of the queue queued with nobody to run it."""
    for pid_file in WORKER_DIR.glob("dvc-exp-worker-*.pid"):
        with contextlib.suppress(ValueError, OSError):
            if _alive(int(pid_file.read_text())):
                return True
    return False


def finished_experiments() -> int:
    """Experiments that have a git ref, i.e. have finished (the queue's own refs aside)."""
    refs = subprocess.run(
        ["git", "for-each-ref", "--format=%(refname)", "refs/exps"],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    ).stdout.split()
    return sum(not ref.startswith("refs/exps/celery/") for ref in refs)


def wait_for_queue(poll_seconds: float = 10.0) -> dict[str, int]:
    """Wait until the workers exit (they stop once the queue is empty), then count the states once."""
    done = finished_experiments()
    while workers_alive():
        time.sleep(poll_seconds)
        if (now := finished_experiments()) != done:
            done = now
            log.info("%d experiments finished so far", done)
    return queue_states()


def queue_grid(grid: dict[str, list], *, start: bool, jobs: int, wait: bool) -> int:
    """Queue the whole grid (after the guards); optionally start the workers and wait. Returns its size."""
    check_grid(grid)
    dirty = dirty_sources()
    if dirty:
        more = f" and {len(dirty) - 8} more" if len(dirty) > 8 else ""
        raise PipelineError(
            "commit these first, queued experiments only see committed sources: " + ", ".join(dirty[:8]) + more
        )
    dvc("exp", "run", "--queue", *set_args(grid))
    size = len(combinations(grid))
    log.info("queued %d experiments", size)
    if start:
        dvc("queue", "start", "-j", str(jobs), log_file=QUEUE_LOG)
    if wait:
        counts = wait_for_queue()
        log.info("queue done: %s", counts)
        stranded = counts.get("queued", 0) + counts.get("running", 0)
        if stranded:
            raise PipelineError(
                f"the queue's workers stopped with {stranded} experiment(s) not run (why: "
                f"{WORKER_DIR}/*.out); `dvc queue start` runs them"
            )
        if counts.get("failed"):
            raise PipelineError(f"{counts['failed']} experiment(s) failed: `dvc queue logs <name>` says why")
    return size


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--file", type=Path, default=GRID_FILE, help="grid file (default: %(default)s)")
    parser.add_argument("--start", action="store_true", help="start the queue's workers: dvc queue start -j JOBS")
    parser.add_argument(
        "-j",
        "--jobs",
        type=at_least(1),
        default=1,
        help="parallel workers (default: %(default)s; several can fail on a shared cache)",
    )
    parser.add_argument(
        "--wait",
        action="store_true",
        help="with --start: return when the queue is empty; with --slurm: when the jobs end",
    )
    show = parser.add_mutually_exclusive_group()
    show.add_argument("--list", action="store_true", help="print the combinations, numbered from 0; queue nothing")
    show.add_argument(
        "--row",
        type=at_least(0),
        metavar="N",
        help="print combination N as `-S key=value` arguments",
    )
    slurm = parser.add_argument_group("Slurm (see README, Running on a cluster)")
    slurm.add_argument("--slurm", action="store_true", help="submit the grid as Slurm job arrays, one task per row")
    slurm.add_argument(
        "--slurm-status", nargs="?", const="", metavar="DIR", help="each row's state (default: the last submission)"
    )
    slurm.add_argument("--rows", type=rows_arg, metavar="0,3,5-7", help="only these rows (default: all)")
    slurm.add_argument("--cpus", type=at_least(1), default=Resources.cpus, help="per task (default: %(default)s)")
    slurm.add_argument("--mem", default=Resources.mem, help="per task (default: %(default)s)")
    slurm.add_argument("--time", default=Resources.time, help="per task (default: %(default)s)")
    slurm.add_argument("--gpus", type=at_least(0), default=0, help="per task, --gres=gpu:N (default: none)")
    slurm.add_argument("--partition", help="Slurm partition (default: the cluster's)")
    slurm.add_argument("--parallel", type=at_least(1), help="at most N rows at once (default: as resources allow)")
    slurm.add_argument("--sbatch", action="append", default=[], metavar="OPTION", help="more sbatch options")
    slurm.add_argument("--cache", help="shared DVC cache folder (default: the DVC remote if one is set, else ours)")
    slurm.add_argument("--remote", help="DVC remote for the outputs (default: the default remote)")
    slurm.add_argument("--venv", help="venv every node can reach (default: this one; '' = one per node)")
    slurm.add_argument("--name", default="grid", help="job name (default: %(default)s)")


def run_slurm(grid: dict[str, list], args: argparse.Namespace) -> int:
    from trafficsigns.experiments import slurm

    resources = slurm.Resources(
        args.cpus, args.mem, args.time, args.gpus, args.partition, args.parallel, [*args.sbatch]
    )
    folder = slurm.submit(
        grid, resources, rows=args.rows, cache=args.cache, remote=args.remote, venv=args.venv, name=args.name
    )
    record = json.loads((folder / slurm.SUBMISSION).read_text())
    print(
        f"submitted {len(record['rows'])} rows as job {record['row_job']} (after data job {record['data_job']}); "
        f"logs in {folder}/; `squeue -j {record['data_job']},{record['row_job']}` to watch, "
        f"`python -m trafficsigns grid --slurm-status` for each row",
        file=sys.stderr,
    )
    if args.wait:
        return slurm.print_status(slurm.wait(folder))
    return 0


def run(args: argparse.Namespace) -> int:
    grid = read_grid(args.file)
    combos = combinations(grid)
    if args.list:
        for i, combo in enumerate(combos):
            print(i, shlex.join(set_args(combo)))
        return 0
    if args.row is not None:
        if args.row >= len(combos):
            raise PipelineError(f"{args.file} has {len(combos)} combinations (0-{len(combos) - 1}), no row {args.row}")
        check_grid(grid)
        print(shlex.join(set_args(combos[args.row])))
        return 0
    if args.slurm_status is not None:
        from trafficsigns.experiments import slurm

        folder = Path(args.slurm_status) if args.slurm_status else slurm.latest_folder()
        return slurm.print_status(slurm.wait(folder) if args.wait else slurm.status(folder))
    if args.slurm:
        return run_slurm(grid, args)
    if args.wait and not args.start:
        raise PipelineError("--wait needs --start (nothing runs the queue otherwise)")
    size = queue_grid(grid, start=args.start, jobs=args.jobs, wait=args.wait)
    hint = "`dvc queue status` to follow, then `make compare`" if args.start else "`dvc queue start -j N` to run them"
    print(f"queued {size} experiments from {args.file}; {hint}", file=sys.stderr)
    return 0
