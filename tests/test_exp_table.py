"""`make exp`'s table: DVC's chosen columns, fitted to 120 columns by breaking headers at their dots."""

from rich.console import Console

from trafficsigns.experiments.exp_table import HEADLINE, cell, render


def test_headers_break_at_dots_so_headline_and_params_fit_120_columns():
    params = ("model.resnet.filters", "train.learning_rate", "train.lr_schedule", "prepare.mode", "augment.copies")
    rows = [
        {
            "Experiment": "",
            "rev": "workspace",
            "typ": "baseline",
            **dict.fromkeys(HEADLINE, "0.123456789"),
            **dict.fromkeys(params, "32"),
        },
        {
            "Experiment": "wide-resnet",
            "rev": "abc1234",
            "typ": "branch_base",
            **dict.fromkeys(HEADLINE, "0.9"),
            **dict.fromkeys(params, "64"),
        },
    ]
    console = Console(width=120, record=True)
    console.print(render(rows))
    lines = console.export_text().splitlines()
    assert max(len(line.rstrip()) for line in lines) <= 120 and "…" not in "".join(lines), lines
    header = "\n".join(lines[1:5])
    for part in ("test.", "macro_f1", "best_val_", "train_", "resnet.", "filters", "schedule", "copies"):
        assert part in header, (part, header)
    assert [line.split()[0] for line in lines[-3:-1]] == ["workspace", "wide-resnet"]
    assert "0.1235" in lines[-3] and "rev" not in header and "typ" not in header


def test_cells_round_decimals_only():
    assert [cell(v) for v in ("0.0016537467700258397", "12.4", "16", "plateau", "")] == [
        "0.001654",
        "12.4",
        "16",
        "plateau",
        "",
    ]
