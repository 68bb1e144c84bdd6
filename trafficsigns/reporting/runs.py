"""A pipeline run read back, for the report and for `compare`: its params as `-S` keys, its test metrics
and how they are written (one number format for both pages), a file as committed in git, and dvclive's
per-epoch curves (read and drawn)."""

from __future__ import annotations

import csv
import json
import math
import subprocess
from pathlib import Path

import numpy as np
from matplotlib.ticker import MaxNLocator

from trafficsigns.core.paths import TRAIN_LIVE_DIR, step_logs
from trafficsigns.reporting import plots

plt = plots.plt
CURVES = step_logs(TRAIN_LIVE_DIR)


# The headline test metrics, in the order both pages show them: key in evaluate.json, label, and whether it
# is a rate (shown as a percentage, its change in percentage points) or a loss (4 decimals).
HEADLINE = (
    ("accuracy", "test accuracy", True),
    ("macro_f1", "macro-F1", True),
    ("top5_accuracy", "top-5 accuracy", True),
    ("loss", "loss", False),
)
DASH = "—"  # a value that does not exist (no baseline, an experiment without that metric)


def test_metrics(evaluation: dict) -> dict:
    """The test-set section of metrics/evaluate.json (`{"test": {"accuracy": ...}}`); {} if it has none."""
    section = evaluation.get("test") if isinstance(evaluation, dict) else None
    return section if isinstance(section, dict) else {}


def number(value, rate: bool) -> str:
    """A metric as both pages write it: rates as percentages with 2 decimals, others with 4; DASH if absent."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or math.isnan(value):
        return DASH
    return f"{value:.2%}" if rate else f"{value:.4f}"


def change(value, baseline, rate: bool) -> str:
    """`value - baseline`, signed: percentage points for rates; DASH if either is absent."""
    if DASH in (number(value, rate), number(baseline, rate)):
        return DASH
    delta = value - baseline
    return f"{100 * delta:+.2f} pp" if rate else f"{delta:+.4f}"


def param_text(value) -> str:
    """A param value as `dvc exp run -S` takes it (v1, true, null, 0.001, [1, 2]); DASH for a missing key (...)."""
    if value is ...:
        return DASH
    return value if isinstance(value, str) and value else json.dumps(value)


class GitError(Exception):
    """git could not answer (not a repository, unknown revision, no such file); the message says why."""


def git(*args: str) -> str:
    """The output of `git <args>` in the current folder, stripped."""
    try:
        result = subprocess.run(
            ["git", *args], capture_output=True, text=True, timeout=60, check=True, stdin=subprocess.DEVNULL
        )
    except subprocess.CalledProcessError as exc:
        lines = (exc.stderr or "").strip().splitlines()
        raise GitError(lines[-1] if lines else str(exc)) from None
    except (OSError, subprocess.SubprocessError) as exc:
        raise GitError(str(exc)) from None
    return result.stdout.strip()


def committed(rev: str, path: Path) -> str:
    """`path` (relative to the current folder) as committed at `rev`."""
    return git("show", f"{rev}:./{path.as_posix()}")


def curve_file(split: str, metric: str) -> Path:
    """Train's dvclive log of one metric on one split ("train" or "val"), one row per epoch."""
    return CURVES / split / f"{metric}.tsv"


def parse_curve(text: str) -> tuple[np.ndarray, np.ndarray]:
    """A dvclive TSV (step, value) as epochs (1-based) and values."""
    rows = list(csv.reader(text.splitlines(), delimiter="\t"))[1:]
    return np.array([int(r[0]) + 1 for r in rows]), np.array([float(r[1]) for r in rows])


def read_curve(path: Path) -> tuple[np.ndarray, np.ndarray]:
    return parse_curve(path.read_text())


def flatten(tree: dict, prefix: str = "") -> dict:
    """{"model": {"name": "v1"}} -> {"model.name": "v1"}, the keys `dvc exp run -S` takes."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


def curves_figure(panels: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]], title: str, path: Path) -> Path:
    """One panel per y label, one line per series: {ylabel: {label: (epochs, values)}}."""
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4), squeeze=False)
    for ax, (ylabel, series) in zip(axes[0], panels.items()):
        for label, (x, y) in series.items():
            ax.plot(x, y, marker="." if len(x) < 30 else None, label=label)
        ax.set_xlabel("epoch"), ax.set_ylabel(ylabel), ax.grid(alpha=0.3), ax.legend(fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle(title)
    plots.save(fig, path)
    return path
