"""A pipeline run read back, for the report and for `compare`: its params as `-S` keys, and dvclive's
per-epoch curves (read and drawn)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from matplotlib.ticker import MaxNLocator

from trafficsigns.core.paths import TRAIN_LIVE_DIR, step_logs
from trafficsigns.reporting import plots

plt = plots.plt
CURVES = step_logs(TRAIN_LIVE_DIR)


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
