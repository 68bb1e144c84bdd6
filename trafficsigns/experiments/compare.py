"""`python -m trafficsigns compare`: one table over all experiments, and their validation curves overlaid.

Reads `dvc exp show --json` (params, metrics and output sizes of every experiment) and each
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
from trafficsigns.reporting.runs import curve_file, curves_figure, flatten, parse_curve

log = logging.getLogger(__name__)
VAL_CURVE = curve_file("val", "accuracy")
SHOWN_APART = ("data.source", "prepare.size", "prepare.mode", "model.name")  # own columns, not "differs"


@dataclass
class Experiment:
    name: str
    rev: str
    state: str  # success | failed | queued | running
    params: dict = field(default_factory=dict)  # flat: "model.name" -> "v1"
    metrics: dict = field(default_factory=dict)  # metrics file -> its JSON
    sizes: dict = field(default_factory=dict)  # output path -> bytes

    @property
    def evaluated(self) -> bool:
        return "accuracy" in self.metrics.get(str(EVALUATE_METRICS), {}).get("test", {})


def dvc_exp_show(all_commits: bool = False, timeout: float | None = None) -> list:
    command = ["dvc", "exp", "show", "--json"] + (["--all-commits"] if all_commits else [])
    try:
        result = subprocess.run(command, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise PipelineError(f"`{' '.join(command)}` did not answer within {timeout:.0f} s") from None
    if result.returncode:
        raise PipelineError(f"`{' '.join(command)}` failed: {result.stderr.strip() or result.stdout.strip()}")
    return json.loads(result.stdout)


def experiments(exp_show: list) -> list[Experiment]:
    """Every experiment under every baseline commit of `dvc exp show --json` (the workspace is not one)."""
    found = []
    for baseline in exp_show:
        for exp_range in baseline.get("experiments") or []:
            latest = exp_range["revs"][0]
            data = latest.get("data") or {}
            found.append(
                Experiment(
                    name=exp_range.get("name") or latest.get("name") or latest["rev"][:7],
                    rev=latest["rev"],
                    state=(
                        (exp_range.get("executor") or {}).get("state")
                        or ("failed" if latest.get("error") else "success")
                    ),
                    params=flatten(((data.get("params") or {}).get("params.yaml") or {}).get("data") or {}),
                    metrics={path: m.get("data") or {} for path, m in (data.get("metrics") or {}).items()},
                    sizes={path: o.get("size") for path, o in (data.get("outs") or {}).items()},
                )
            )
    return found


def val_curve(rev: str):
    """(epochs, val accuracy) from the experiment's commit, or None if it has no curve."""
    result = subprocess.run(
        ["git", "show", f"{rev}:{VAL_CURVE.as_posix()}"], capture_output=True, text=True, stdin=subprocess.DEVNULL
    )
    return parse_curve(result.stdout) if result.returncode == 0 else None


def differing(exps: list[Experiment]) -> list[str]:
    """Param keys whose values are not all the same across `exps`, less those with their own column."""
    keys = sorted({k for e in exps for k in e.params})
    return [k for k in keys if k not in SHOWN_APART and len({json.dumps(e.params.get(k)) for e in exps}) > 1]


def table(exps: list[Experiment]) -> Table:
    """One row per experiment, best test accuracy first and highlighted."""
    exps = sorted(exps, key=lambda e: -e.metrics[str(EVALUATE_METRICS)]["test"]["accuracy"])
    varying = differing(exps)
    rows = []
    for e in exps:
        evaluation, training = e.metrics[str(EVALUATE_METRICS)]["test"], e.metrics.get(str(TRAIN_SUMMARY), {})
        timings = e.metrics.get(str(TRAIN_TIMINGS)) or training  # experiments from before timings.json: in training
        p = e.params
        size = e.sizes.get(str(BEST_MODEL))
        rows.append(
            [
                e.name,
                f"{p.get('data.source')} {p.get('prepare.size')} px {p.get('prepare.mode')}",
                p.get("model.name"),
                ", ".join(f"{k}={p.get(k)}" for k in varying) or "-",
                f"{evaluation['accuracy']:.2%}",
                f"{evaluation['macro_f1']:.4f}",
                f"{timings['train_seconds']:.0f}" if "train_seconds" in timings else "-",
                f"{training['parameters']:,}" if "parameters" in training else "-",
                f"{size / 2**20:.1f}" if size else "-",
            ]
        )
    header = [
        "experiment",
        "dataset",
        "model",
        "params that differ",
        "test accuracy",
        "macro-F1",
        "train time (s)",
        "weights",
        "model size (MiB)",
    ]
    return Table(header, rows, bold={(0, 0), (0, 4)})


def write_comparison(
    exps: list[Experiment],
    selected: list[str] | None = None,
    html_path: Path = COMPARE_HTML,
    md_path: Path = COMPARE_MD,
    images_dir: Path = COMPARE_IMAGES,
) -> list[Experiment]:
    """The table and the curves of the `selected` experiments (all if None); returns those shown."""
    if selected:
        unknown = sorted(set(selected) - {e.name for e in exps})
        if unknown:
            raise PipelineError(f"no experiment named {', '.join(unknown)}; see `dvc exp show`")
        exps = [e for e in exps if e.name in selected]
    shown = [e for e in exps if e.evaluated]
    if not shown:
        raise PipelineError(
            "no finished experiment to compare: queue some with `make grid`, then watch `dvc queue status`"
        )
    blocks = [
        Text(
            f"{len(shown)} experiments from `dvc exp show --json`; the best test accuracy is highlighted. "
            "Test accuracy never picked a model: each run kept its best epoch on validation."
        )
    ]
    left_out = [f"{e.name} ({e.state})" for e in exps if not e.evaluated]
    if left_out:
        blocks.append(Text("Not shown, no test metrics yet: " + ", ".join(left_out) + "."))
    blocks.append(table(shown))
    with tempfile.TemporaryDirectory() as tmp:
        curves = {
            f"{e.name}: {e.params.get('model.name')}, {e.params.get('prepare.size')} px "
            f"{e.params.get('prepare.mode')}": curve
            for e in shown
            if (curve := val_curve(e.rev)) is not None
        }
        sections = [Section("Experiments", blocks)]
        if curves:
            path = curves_figure(
                {"validation accuracy": curves}, "Validation accuracy per epoch", Path(tmp) / "val_accuracy.png"
            )
            sections.append(Section("Validation curves", [Figure(path, "Validation accuracy of each experiment")]))
        write_document("Experiments compared", sections, html_path, md_path, images_dir)
    log.info("wrote %s and %s: %d experiments", html_path, md_path, len(shown))
    return shown


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("experiments", nargs="*", metavar="EXP", help="experiments to show (default: all)")
    parser.add_argument("--all-commits", action="store_true", help="experiments of every commit, not only HEAD's")
    parser.add_argument(
        "--exp-show-json",
        type=Path,
        metavar="FILE",
        help="read this saved `dvc exp show --json` output instead of running it",
    )


def run(args: argparse.Namespace) -> int:
    exp_show = json.loads(args.exp_show_json.read_text()) if args.exp_show_json else dvc_exp_show(args.all_commits)
    shown = write_comparison(experiments(exp_show), args.experiments)
    print(f"{COMPARE_MD}: {len(shown)} experiments; {COMPARE_HTML} opens offline")
    return 0
