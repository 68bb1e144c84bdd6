"""`python -m trafficsigns grid --slurm`: grid.yaml as Slurm job arrays, every finished row a DVC experiment here.

Two array jobs run batch/slurm_experiment.sh, each task in its own clone of the submitted commit:

- `<name>-data`: one task per data config of the grid (the values of the keys that download, prepare
  and augment read), which runs those stages once so that DVC's run-cache has them;
- `<name>`: one task per grid row (after the first job, whatever became of it), which runs
  `dvc exp run -n grid-<job id>-<row> -S ...` (the data stages come back from the run-cache) and
  `dvc exp push origin`: the experiment's git ref to this repo, its outputs to the shared DVC cache
  (default: this repo's) or to the DVC remote.

Everything a submission writes, its logs included, is in one folder, logs/slurm/<name>-<time>/; `status`
reads it back: each row done (its experiment is here), failed (its log), or not finished.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from trafficsigns.core.errors import PipelineError
from trafficsigns.core.shell import setup_logging

log = logging.getLogger(__name__)
SCRIPT = Path("batch/slurm_experiment.sh")
LOG_ROOT = Path("logs/slurm")
DATA_STAGES = ("download", "prepare", "augment")  # identical across rows that share their params
SUBMISSION = "submission.json"


@dataclass
class Resources:
    """Per task. The defaults fit a small node (2 cores, 8 GiB); a GPU only when asked."""

    cpus: int = 2
    mem: str = "8G"
    time: str = "02:00:00"
    gpus: int = 0
    partition: str | None = None
    parallel: int | None = None  # at most this many rows at once (sbatch --array=...%N)
    extra: list[str] = field(default_factory=list)  # more sbatch options, as given

    def sbatch_options(self) -> list[str]:
        options = [f"--cpus-per-task={self.cpus}", f"--mem={self.mem}", f"--time={self.time}"]
        if self.gpus:
            options.append(f"--gres=gpu:{self.gpus}")
        if self.partition:
            options.append(f"--partition={self.partition}")
        return options + self.extra


def _run(command: list[str], cwd: Path | None = None) -> str:
    try:
        result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise PipelineError(f"{command[0]}: not found (Slurm's clients run on the cluster's login node)") from None
    if result.returncode:
        raise PipelineError(f"`{shlex.join(command)}` failed: {(result.stderr or result.stdout).strip()}")
    return result.stdout.strip()


def data_keys(grid: dict[str, list], dvc_yaml: Path = Path("dvc.yaml")) -> list[str]:
    """The grid keys that the data stages read (their `params:` in dvc.yaml: `prepare` covers prepare.mode)."""
    import yaml

    stages = yaml.safe_load(dvc_yaml.read_text())["stages"]
    read = set()
    for name in DATA_STAGES:
        for entry in stages.get(name, {}).get("params") or []:
            read.update(entry if isinstance(entry, dict) else [entry])
    if "params.yaml" in read:  # the whole file
        return list(grid)
    return [k for k in grid if any(k == p or k.startswith(p + ".") for p in read)]


def data_configs(combos: list[dict], keys: list[str]) -> list[dict]:
    """The distinct values of `keys` over the rows, in row order."""
    seen = []
    for combo in combos:
        config = {k: combo[k] for k in keys}
        if config not in seen:
            seen.append(config)
    return seen


def storage(cache: str | None, remote: str | None) -> tuple[str, str]:
    """(shared cache folder, DVC remote): exactly one is set. A --cache wins, then --remote or the
    default remote (`dvc remote add -d`), else this repo's own cache, which every node must then reach."""
    if cache:
        return str(Path(cache).resolve()), ""
    from dvc.config import Config

    config = Config(dvc_dir=".dvc", local_dvc_dir=".dvc")
    name = remote or config["core"].get("remote")
    if name:
        if name not in config["remote"]:
            raise PipelineError(f"no DVC remote named {name!r}; see `dvc remote list`")
        return "", name
    return str(Path(_run(["dvc", "cache", "dir"])).resolve()), ""


def configure(repo: str, cache: str, remote: str) -> None:
    """In a task's clone: the shared cache, or the submitting repo's DVC remote (url and options from its
    .dvc/config and .dvc/config.local, which a clone lacks), as this clone's .dvc/config.local."""
    from dvc.config import Config

    clone = Config(dvc_dir=".dvc", local_dvc_dir=".dvc")
    with clone.edit("local") as conf:
        if cache:
            conf["cache"]["dir"] = cache
            conf["cache"]["shared"] = "group"
        if remote:
            source = Config(dvc_dir=f"{repo}/.dvc", local_dvc_dir=f"{repo}/.dvc")
            conf["remote"][remote] = dict(source["remote"][remote])
            conf["core"]["remote"] = remote


def sbatch(options: list[str], env: dict[str, str]) -> str:
    """Submit; returns the job id."""
    exports = ",".join(["ALL", *(f"{k}={v}" for k, v in env.items())])
    command = ["sbatch", "--parsable", f"--export={exports}", *options, str(SCRIPT)]
    log.info("%s", shlex.join(command))
    return _run(command).split(";")[0]


def submit(
    grid: dict[str, list],
    resources: Resources,
    *,
    rows: list[int] | None = None,
    cache: str | None = None,
    remote: str | None = None,
    venv: str | None = None,
    name: str = "grid",
) -> Path:
    """Submit the data job and the rows' job; returns the submission's folder."""
    from trafficsigns.experiments.grid import check_grid, combinations, dirty_sources, set_args

    check_grid(grid)
    dirty = dirty_sources()
    if dirty:
        raise PipelineError(
            "commit these first, the tasks clone the last commit: "
            + ", ".join(dirty[:8])
            + (f" and {len(dirty) - 8} more" if len(dirty) > 8 else "")
        )
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", name):
        raise PipelineError(f"--name {name!r}: letters, digits, - and _ only (it names the experiments)")
    combos = combinations(grid)
    rows = sorted(set(range(len(combos)) if rows is None else rows))
    if bad := [r for r in rows if r >= len(combos)]:
        raise PipelineError(f"the grid has {len(combos)} rows (0-{len(combos) - 1}), no row {bad[0]}")
    root = Path(_run(["git", "rev-parse", "--show-toplevel"]))
    commit = _run(["git", "rev-parse", "HEAD"])
    shared_cache, dvc_remote = storage(cache, remote)

    keys = data_keys(grid)
    configs = data_configs([combos[r] for r in rows], keys)
    folder = LOG_ROOT / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    folder.mkdir(parents=True)  # sbatch does not create the folder of --output: a task would die unlogged
    (folder / "rows.tsv").write_text("".join(f"{r}\t{shlex.join(set_args(combos[r]))}\n" for r in rows))
    (folder / "data.tsv").write_text("".join(f"{i}\t{shlex.join(set_args(c))}\n" for i, c in enumerate(configs)))
    if venv is None and sys.prefix != sys.base_prefix:
        venv = sys.prefix  # this venv: on a cluster, on the shared filesystem the nodes see too
    env = {
        "REPO": str(root),
        "COMMIT": commit,
        "DVC_CACHE": shared_cache,
        "DVC_REMOTE": dvc_remote,
        "VENV": str(Path(venv).resolve()) if venv else "",
    }
    for key, value in env.items():
        if "," in value:
            raise PipelineError(f"{key}={value}: sbatch --export cannot pass a value with a comma")
    common = resources.sbatch_options() + [f"--chdir={folder.resolve()}"]
    data_job = sbatch(
        [f"--job-name={name}-data", f"--array=0-{len(configs) - 1}", f"--output={folder.resolve()}/data-%a.out"]
        + common,
        {**env, "MODE": "data", "TASKS": str((folder / "data.tsv").resolve())},
    )
    array = ",".join(map(str, rows)) + (f"%{resources.parallel}" if resources.parallel else "")
    row_job = sbatch(
        [
            f"--job-name={name}",
            f"--array={array}",
            f"--output={folder.resolve()}/row-%a.out",
            f"--dependency=afterany:{data_job}",
        ]
        + common,
        {**env, "MODE": "row", "TASKS": str((folder / "rows.tsv").resolve())},
    )
    record = {
        "commit": commit,
        "data_job": data_job,
        "row_job": row_job,
        "rows": {str(r): f"grid-{row_job}-{r}" for r in rows},
        "data_configs": len(configs),
        "cache": shared_cache,
        "remote": dvc_remote,
        "sbatch": common,
    }
    (folder / SUBMISSION).write_text(json.dumps(record, indent=2) + "\n")
    return folder


def in_queue(*job_ids: str) -> bool:
    out = _run(["squeue", "--noheader", "--format=%i", f"--jobs={','.join(job_ids)}"])
    return bool(out.strip())


def _exp_refs() -> set[str]:
    refs = _run(["git", "for-each-ref", "--format=%(refname)", "refs/exps"]).split()
    return {ref.rsplit("/", 1)[-1] for ref in refs}


def status(folder: Path) -> list[tuple[int, str, str, str]]:
    """(row, experiment, state, detail) per row: done | failed (its log) | running | pending."""
    record = json.loads((folder / SUBMISSION).read_text())
    folder = folder.resolve()
    try:
        queued = in_queue(record["data_job"], record["row_job"])
    except PipelineError:
        queued = False  # squeue unreachable: report what the files say
    refs = _exp_refs()
    report = []
    for row, exp in record["rows"].items():
        log_file = folder / f"row-{row}.out"
        state_file = folder / f"row-{row}.status"
        words = state_file.read_text().split() if state_file.exists() else []
        if exp in refs:
            report.append((int(row), exp, "done", f"`dvc exp show`; log {log_file}"))
        elif words and words[0] != "start":
            report.append((int(row), exp, "failed", f"exit {words[0]}, see {log_file}"))
        elif words:
            report.append((int(row), exp, "running" if queued else "failed", f"see {log_file}"))
        else:
            report.append((int(row), exp, "pending" if queued else "failed", f"never started; see {log_file}"))
    return report


def wait(folder: Path, poll_seconds: float = 5.0) -> list[tuple[int, str, str, str]]:
    record = json.loads((folder / SUBMISSION).read_text())
    while in_queue(record["data_job"], record["row_job"]):
        time.sleep(poll_seconds)
    return status(folder)


def print_status(report: list[tuple[int, str, str, str]]) -> int:
    for row, exp, state, detail in report:
        print(f"row {row}  {exp}  {state}  {detail}")
    failed = [r for r in report if r[2] == "failed"]
    if failed:
        rows = ",".join(str(r[0]) for r in failed)
        print(f"{len(failed)} row(s) failed; after a fix, commit and resubmit them with --rows {rows}", file=sys.stderr)
    return 1 if failed else 0


def latest_folder() -> Path:
    folders = sorted(LOG_ROOT.glob(f"*/{SUBMISSION}"), key=lambda p: p.stat().st_mtime)
    if not folders:
        raise PipelineError(f"no submission under {LOG_ROOT}/; submit with `python -m trafficsigns grid --slurm`")
    return folders[-1].parent


def rows_arg(text: str) -> list[int]:
    """'0,3,5-7' -> [0, 3, 5, 6, 7]."""
    rows = []
    for part in text.split(","):
        low, _, high = part.partition("-")
        try:
            rows += range(int(low), int(high or low) + 1)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected rows like 0,3,5-7, got {text!r}") from None
    return rows


def set_params(args: list[str], path: Path = Path("params.yaml")) -> None:
    """Apply a row's `-S key=value ...` to params.yaml with DVC's own parser, as `dvc exp run -S` would.

    The data job runs `dvc repro augment` on it, not `dvc exp run`: an experiment is saved with every output
    dvc.lock names, and in a fresh clone with a fresh remote the later stages' outputs are nowhere (it fails).
    """
    from dvc.utils.hydra import apply_overrides

    if len(args) % 2 or any(flag != "-S" for flag in args[::2]):
        raise PipelineError(f"expected -S key=value pairs, got {args}")
    apply_overrides(path, args[1::2])


def main(argv: list[str]) -> int:
    """The batch script's helpers: `python -m trafficsigns.experiments.slurm configure REPO CACHE REMOTE`,
    `... set-params -S key=value ...`."""
    setup_logging()
    if len(argv) == 4 and argv[0] == "configure":
        configure(*argv[1:])
    elif argv[:1] == ["set-params"]:
        set_params(argv[1:])
    else:
        print(main.__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    sys.exit(main(sys.argv[1:]))
