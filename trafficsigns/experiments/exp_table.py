"""`make exp`: `dvc exp show` cut to what tells experiments apart, and fitted to a terminal.

DVC picks and orders the columns: `--keep` the test accuracy and macro-F1, the best val accuracy and the
training seconds; `--drop` the other metrics and every code hash; `--only-changed` drops the params equal
in every row. Metric columns follow dvc.yaml's stage order, where `evaluate` comes first. This module
only prints DVC's CSV as a table whose headers break at their dots: DVC's own table keeps each header
on one line, so at 120 columns it folds all but the first few columns into "…".
"""

from __future__ import annotations

import csv
import re
import subprocess
import sys

from rich import box
from rich.console import Console
from rich.table import Table

HEADLINE = ("test.accuracy", "test.macro_f1", "best_val_accuracy", "train_seconds")
# Metric names only: params share their prefixes (export.enabled vs export.keras.accuracy). `.*/`: code
# and data hashes (paths); ensemble members are named by path too.
DROP = (
    r"Created$|test\.|ensemble\.members\.|export\.\w+\.(accuracy|bytes)$|(train|val)\.(accuracy|loss)$"
    r"|(learning_rate|step|best_epoch|epochs_done|parameters|epoch_seconds|images_per_second)$|.*/"
)
HIDDEN = ("rev", "typ")  # the CSV's bookkeeping columns


def dvc_exp_show_csv(options: list[str]) -> list[dict[str, str]]:
    keep = "(" + "|".join(map(re.escape, HEADLINE)) + ")$"
    command = ["dvc", "exp", "show", "--csv", "--only-changed", "--keep", keep, "--drop", DROP, *options]
    result = subprocess.run(command, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if result.returncode:
        sys.exit(result.stderr.strip() or f"{' '.join(command)} failed")
    return list(csv.DictReader(result.stdout.splitlines()))


def cell(text: str) -> str:
    """A decimal to 4 significant digits (DVC's CSV has all 17); integers and words as they are."""
    try:
        return text if "." not in text else f"{float(text):.4g}"
    except ValueError:
        return text


def render(rows: list[dict[str, str]]) -> Table:
    """One row per experiment (the baselines by name); a header breaks after a dot or an underscore that a
    word of 4 or more letters follows ("best_val_" / "accuracy")."""
    table = Table(box=box.HORIZONTALS, header_style="bold")
    columns = [c for c in rows[0] if c not in HIDDEN] if rows else []
    for column in columns:
        table.add_column(
            re.sub(r"([._])(?=[^._]{4})", "\\1\n", column), justify="left" if column == "Experiment" else "right"
        )
    for row in rows:
        table.add_row(row["Experiment"] or row["rev"], *(cell(row[c]) for c in columns[1:]))
    return table


if __name__ == "__main__":
    Console().print(render(dvc_exp_show_csv(sys.argv[1:])))
