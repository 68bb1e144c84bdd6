"""`python -m trafficsigns compare`: one table over all experiments against a baseline row (HEAD's commit, the
experiments' baseline, or `--baseline EXP`), and their validation curves overlaid.

Reads `dvc exp show --json` (params, metrics, output sizes and dates of every experiment) and each
experiment's dvclive validation curve with `git show <rev>:<file>`: the curves are committed outputs
(cache: false), so every experiment commit holds its own. Writes reports/compare.html (self-contained)
and reports/compare.md (its figure in reports/compare/).
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from trafficsigns.core.errors import PipelineError
from trafficsigns.core.paths import (
    BEST_MODEL,
    COMPARE_HTML,
    COMPARE_IMAGES,
    COMPARE_MD,
    EVALUATE_METRICS,
    TRAIN_SUMMARY,
    TRAIN_TIMINGS,
)
from trafficsigns.reporting.document import Figure, Section, Table, Text, write_document
from trafficsigns.reporting.runs import (
    DASH,
    GitError,
    change,
    committed,
    curve_file,
    curves_figure,
    flatten,
    number,
    param_text,
    parse_curve,
    test_metrics,
)

log = logging.getLogger(__name__)
VAL_CURVE = curve_file("val", "accuracy")
IMAGE_SIZE = "prepare.image_size"
SHOWN_APART = ("data.source", IMAGE_SIZE, "prepare.mode", "model.name")  # own columns, not "differs"


@dataclass
class Experiment:
    name: str
    rev: str
    state: str  # success | failed | queued | running
    params: dict = field(default_factory=dict)  # flat: "model.name" -> "v1"
    metrics: dict = field(default_factory=dict)  # metrics file -> its JSON
    sizes: dict = field(default_factory=dict)  # output path -> bytes
    timestamp: str = ""  # ISO 8601, the commit's

    @property
    def test(self) -> dict:
        return test_metrics(self.metrics.get(str(EVALUATE_METRICS), {}))

    @property
    def evaluated(self) -> bool:
        return "accuracy" in self.test


def dvc_exp_show(all_commits: bool = False, timeout: float | None = None) -> list:
    command = ["dvc", "exp", "show", "--json"] + (["--all-commits"] if all_commits else [])
    try:
        result = subprocess.run(command, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise PipelineError(f"`{' '.join(command)}` did not answer within {timeout:.0f} s") from None
    if result.returncode:
        raise PipelineError(f"`{' '.join(command)}` failed: {result.stderr.strip() or result.stdout.strip()}")
    return json.loads(result.stdout)


def from_state(state: dict, name: str, status: str) -> Experiment:
    """One commit of `dvc exp show --json` (a baseline or an experiment's latest) as an Experiment."""
    data = state.get("data") or {}
    return Experiment(
        name=name,
        rev=state["rev"],
        state=status,
        params=flatten(((data.get("params") or {}).get("params.yaml") or {}).get("data") or {}),
        metrics={path: m.get("data") or {} for path, m in (data.get("metrics") or {}).items()},
        sizes={path: o.get("size") for path, o in (data.get("outs") or {}).items()},
        timestamp=data.get("timestamp") or "",
    )


def experiments(exp_show: list) -> list[Experiment]:
    """Every experiment under every baseline commit of `dvc exp show --json` (the workspace is not one)."""
    found = []
    for baseline in exp_show:
        for exp_range in baseline.get("experiments") or []:
            latest = exp_range["revs"][0]
            status = (exp_range.get("executor") or {}).get("state") or ("failed" if latest.get("error") else "success")
            found.append(from_state(latest, exp_range.get("name") or latest.get("name") or latest["rev"][:7], status))
    return found


def baseline_commits(exp_show: list) -> list[Experiment]:
    """The baseline commits of `dvc exp show --json`, HEAD first (named by their branch, else short rev)."""
    return [
        from_state(b, b.get("name") or b["rev"][:7], "failed" if b.get("error") else "success")
        for b in exp_show
        if b.get("rev") != "workspace"
    ]


def pick_baseline(exp_show: list, name: str | None) -> Experiment | None:
    """The row every other is compared with: `name` (an experiment or a baseline commit), else HEAD."""
    commits = baseline_commits(exp_show)
    if name is None:
        return commits[0] if commits else None
    for e in commits + experiments(exp_show):
        if name in (e.name, e.rev, e.rev[:7]):
            return e
    raise PipelineError(f"no experiment or baseline commit named {name}; see `dvc exp show`")


def val_curve(rev: str):
    """(epochs, val accuracy) from the experiment's commit, or None if it has no curve."""
    try:
        return parse_curve(committed(rev, VAL_CURVE))
    except GitError:
        return None


def differing(exps: list[Experiment]) -> list[str]:
    """Param keys whose values are not all the same across `exps`, less those with their own column."""
    keys = sorted({k for e in exps for k in e.params})
    return [k for k in keys if k not in SHOWN_APART and len({json.dumps(e.params.get(k)) for e in exps}) > 1]


def when(e: Experiment) -> str:
    """Short commit and date, `abc1234 2026-12-02 18:30`."""
    return f"{e.rev[:7]} {e.timestamp[:16].replace('T', ' ')}".strip()


def row(e: Experiment, label: str, varying: list[str], baseline: Experiment | None) -> list[str]:
    test, training = e.test, e.metrics.get(str(TRAIN_SUMMARY), {})
    timings = e.metrics.get(str(TRAIN_TIMINGS)) or training  # experiments from before timings.json: in training
    p, size = e.params, e.sizes.get(str(BEST_MODEL))
    base = baseline.test if baseline is not None and e is not baseline else {}
    return [
        label,
        when(e),
        "{} {} px {}".format(*(param_text(p.get(k, ...)) for k in ("data.source", IMAGE_SIZE, "prepare.mode"))),
        param_text(p.get("model.name", ...)),
        ", ".join(f"{k}={param_text(p.get(k, ...))}" for k in varying) or DASH,
        number(test.get("accuracy"), True),
        change(test.get("accuracy"), base.get("accuracy"), True),
        number(test.get("macro_f1"), True),
        change(test.get("macro_f1"), base.get("macro_f1"), True),
        f"{timings['train_seconds']:.0f}" if "train_seconds" in timings else DASH,
        f"{training['parameters']:,}" if "parameters" in training else DASH,
        f"{size / 2**20:.1f}" if size else DASH,
    ]


HEADER = [
    "experiment",
    "commit, date",
    "dataset",
    "model",
    "params that differ",
    "test accuracy",
    "change",
    "macro-F1",
    "change",
    "train time (s)",
    "weights",
    "model size (MiB)",
]


def table(exps: list[Experiment], baseline: Experiment | None) -> Table:
    """The baseline's row first, then one per experiment, best test accuracy first and highlighted; the
    changes are against the baseline, in percentage points."""
    exps = sorted((e for e in exps if e is not baseline), key=lambda e: -e.test["accuracy"])
    varying = differing(exps + ([baseline] if baseline else []))
    rows = [row(baseline, f"baseline: {baseline.name}", varying, baseline)] if baseline else []
    first = len(rows)
    rows += [row(e, e.name, varying, baseline) for e in exps]
    return Table(HEADER, rows, bold={(first, 0), (first, 5)})


def write_comparison(
    exps: list[Experiment],
    selected: list[str] | None = None,
    baseline: Experiment | None = None,
    html_path: Path = COMPARE_HTML,
    md_path: Path = COMPARE_MD,
    images_dir: Path = COMPARE_IMAGES,
) -> list[Experiment]:
    """The table and the curves of the `selected` experiments (all if None) against `baseline`; returns
    the experiments shown."""
    if selected:
        unknown = sorted(set(selected) - {e.name for e in exps})
        if unknown:
            raise PipelineError(f"no experiment named {', '.join(unknown)}; see `dvc exp show`")
        exps = [e for e in exps if e.name in selected]
    shown = [e for e in exps if e.evaluated and (baseline is None or e.rev != baseline.rev)]
    if not shown:
        raise PipelineError(
            "no finished experiment to compare: queue some with `make grid`, then watch `dvc queue status`"
        )
    if baseline is None:
        against = "No baseline commit in `dvc exp show`: no changes are shown."
    elif not baseline.evaluated:
        against = f"The baseline, {baseline.name}, has no test metrics: no changes are shown."
    else:
        against = (
            f"The first row is the baseline, {baseline.name}; each change is against it, in percentage points "
            "(pp). `--baseline EXP` compares with an experiment instead."
        )
    blocks = [
        Text(
            f"{len(shown)} experiment{'s' if len(shown) > 1 else ''} from `dvc exp show --json`; the one with the "
            "best test accuracy is highlighted. "
            f"{against} Test accuracy never picked a model: each run kept its best epoch on validation."
        )
    ]
    left_out = [f"{e.name} ({e.state})" for e in exps if not e.evaluated]
    if left_out:
        blocks.append(Text("Not shown, no test metrics yet: " + ", ".join(left_out) + "."))
    blocks.append(table(shown, baseline))
    runs = ([baseline] if baseline else []) + shown
    with tempfile.TemporaryDirectory() as tmp:
        curves = {
            "{}: {}, {} px {}".format(
                e.name, *(param_text(e.params.get(k, ...)) for k in ("model.name", IMAGE_SIZE, "prepare.mode"))
            ): curve
            for e in runs
            if (curve := val_curve(e.rev)) is not None
        }
        sections = [Section("Experiments", blocks)]
        if curves:
            path = curves_figure(
                {"validation accuracy": curves}, "Validation accuracy per epoch", Path(tmp) / "val_accuracy.png"
            )
            sections.append(Section("Validation curves", [Figure(path, "Validation accuracy of each run")]))
        write_document("Experiments compared", sections, html_path, md_path, images_dir)
    log.info("wrote %s and %s: %d experiments", html_path, md_path, len(shown))
    return shown


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("experiments", nargs="*", metavar="EXP", help="experiments to show (default: all)")
    parser.add_argument("--all-commits", action="store_true", help="experiments of every commit, not only HEAD's")
    parser.add_argument(
        "--baseline",
        metavar="NAME",
        help="compare with this experiment or baseline commit (default: HEAD's, the experiments' baseline)",
    )
    parser.add_argument(
        "--exp-show-json",
        type=Path,
        metavar="FILE",
        help="read this saved `dvc exp show --json` output instead of running it",
    )


def run(args: argparse.Namespace) -> int:
    exp_show = json.loads(args.exp_show_json.read_text()) if args.exp_show_json else dvc_exp_show(args.all_commits)
    shown = write_comparison(experiments(exp_show), args.experiments, pick_baseline(exp_show, args.baseline))
    print(f"{COMPARE_MD}: {len(shown)} experiments; {COMPARE_HTML} opens offline")
    return 0
