"""Set what every report compares with: `reports/baseline.json`, the test metrics and params of one run.

A file, not a git lookup at report time: the report is a DVC output whose bytes may only depend on what
dvc.yaml lists (a run-cache restore or a fresh clone must give the same page), and a baseline found
through git history would not be one of those. So the baseline is an input, committed with the code:
`trafficsigns baseline` records the workspace's results (main's, after `dvc repro`), `trafficsigns
baseline NAME` a commit, branch, tag or DVC experiment's; every later report and `dvc exp run` compares
with it, and changing it re-runs `report` only.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from trafficsigns.core.errors import PipelineError
from trafficsigns.core.fsutil import write_text
from trafficsigns.core.paths import EVALUATE_METRICS, REPORT_BASELINE
from trafficsigns.reporting.runs import GitError, committed, flatten, git, test_metrics

log = logging.getLogger(__name__)


@dataclass
class Baseline:
    """What a run is measured against: a named run's test metrics and params, or why there is none."""

    name: str | None
    why: str = ""
    metrics: dict = field(default_factory=dict)  # {"accuracy": ..., ...}; {} if it had none
    params: dict = field(default_factory=dict)  # its params.yaml, flattened


def read_baseline(path: Path = REPORT_BASELINE) -> Baseline:
    if not path.exists():
        return Baseline(None, f"no `{path}`: `trafficsigns baseline` records one")
    try:
        data = json.loads(path.read_text())
        return Baseline(data["name"], metrics=test_metrics(data), params=data["params"])
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise PipelineError(f"{path} is not a baseline written by `trafficsigns baseline` ({exc})") from None


def resolve(name: str) -> str:
    """A commit, branch or tag, or a DVC experiment's name (refs/exps/.../NAME), as a commit id."""
    try:
        return git("rev-parse", "--verify", "--quiet", f"{name}^{{commit}}")
    except GitError:
        refs = git("for-each-ref", "--format=%(objectname) %(refname)", "refs/exps").splitlines()
        found = [sha for sha, ref in (line.split(" ", 1) for line in refs) if ref.rsplit("/", 1)[-1] == name]
        if len(found) != 1:
            raise PipelineError(f"{name!r} is no commit, branch, tag or (single) DVC experiment here") from None
        return found[0]


def record(name: str | None, path: Path = REPORT_BASELINE) -> dict:
    """Write the baseline file from the workspace (name None) or from a commit or experiment."""
    if name is None:
        evaluation, params = EVALUATE_METRICS.read_text(), Path("params.yaml").read_text()
        label = f"{git('rev-parse', '--abbrev-ref', 'HEAD')} (workspace at {git('rev-parse', '--short', 'HEAD')})"
    else:
        rev = resolve(name)
        evaluation, params = committed(rev, EVALUATE_METRICS), committed(rev, Path("params.yaml"))
        label = f"{name} ({rev[:7]})"
    metrics = test_metrics(json.loads(evaluation))
    if not metrics:
        raise PipelineError(f"{label} has no test metrics in {EVALUATE_METRICS}: run `dvc repro` first")
    baseline = {"name": label, "test": metrics, "params": flatten(yaml.safe_load(params))}
    write_text(path, json.dumps(baseline, indent=2, sort_keys=True) + "\n")
    return baseline


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "name",
        nargs="?",
        help="commit, branch, tag or DVC experiment to compare with (default: the workspace's results)",
    )


def run(args: argparse.Namespace) -> int:
    baseline = record(args.name)
    log.info(
        "%s: reports compare with %s (test accuracy %.4f)",
        REPORT_BASELINE,
        baseline["name"],
        baseline["test"]["accuracy"],
    )
    return 0
