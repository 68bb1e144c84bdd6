"""The README's parameter table states the committed params.yaml's values, and lists every key."""

import re

import yaml

from tests.helpers import ROOT, committed_params

SECTION = "## Parameters (`params.yaml`)"


def parameter_rows(readme: str) -> list[tuple[list[str], str]]:
    """([keys], defaults cell) of each row of the README's parameter table: | `a`, `b` | 1, 2 | ... |."""
    assert SECTION in readme, f"README.md has no section {SECTION!r}"
    section = readme.split(SECTION, 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        if line.startswith("| `"):
            keys_cell, default_cell = (cell.strip() for cell in line.strip().strip("|").split("|")[:2])
            rows.append((re.findall(r"`([^`]+)`", keys_cell), default_cell))
    return rows


def split_values(cell: str) -> list[str]:
    """`a`, {x: 1, y: 2}, 3 -> three values: a comma inside braces or brackets does not split."""
    values, depth, current = [], 0, ""
    for char in cell:
        if char in "{[":
            depth += 1
        elif char in "}]":
            depth -= 1
        if char == "," and depth == 0:
            values.append(current.strip())
            current = ""
        else:
            current += char
    return [*values, current.strip()]


def leaves(tree: dict, prefix: str = "") -> set[str]:
    out = set()
    for key, value in tree.items():
        out |= leaves(value, f"{prefix}{key}.") if isinstance(value, dict) else {prefix + key}
    return out


def table_problems(readme: str, committed: dict) -> list[str]:
    """Each key whose stated default is not the committed value, is unknown, or is not in the table."""
    problems, documented = [], set()
    for keys, cell in parameter_rows(readme):
        values = split_values(cell)
        if len(values) != len(keys):
            problems.append(f"{', '.join(keys)}: {len(keys)} keys but {len(values)} defaults ({cell})")
            continue
        for key, value in zip(keys, values):
            tree = committed
            for name in key.split("."):
                tree = tree.get(name, KeyError) if isinstance(tree, dict) else KeyError
            if tree is KeyError:
                problems.append(f"{key}: in the README, not in params.yaml")
                continue
            documented |= leaves(tree, f"{key}.") if isinstance(tree, dict) else {key}
            if yaml.safe_load(value.strip("`")) != tree:
                problems.append(f"{key}: the README says {value}, params.yaml has {tree!r}")
    problems += [f"{key}: in params.yaml, not in the README's table" for key in sorted(leaves(committed) - documented)]
    return problems


def test_the_parameter_table_states_the_committed_values_of_every_key():
    readme = (ROOT / "README.md").read_text()
    assert len(parameter_rows(readme)) > 20
    assert table_problems(readme, committed_params()) == []


def test_a_drifted_default_a_stray_key_and_a_missing_key_are_caught():
    readme = (ROOT / "README.md").read_text()
    drifted = readme.replace("| `prepare.image_size` | 32 |", "| `prepare.image_size` | 24 |", 1)
    assert table_problems(drifted, committed_params()) == ["prepare.image_size: the README says 24, params.yaml has 32"]
    stray = readme.replace("| `model.conv_dropout` | 0.2 |", "| `model.conv_dropout`, `model.filters` | 0.2, 32 |")
    assert table_problems(stray, committed_params()) == ["model.filters: in the README, not in params.yaml"]
    widths = readme.replace(
        "| `model.v1` | `{filters: 96, dense: 1500, dropout: 0.5}` |", "| `model.v1.filters` | 96 |"
    )
    assert table_problems(widths, committed_params()) == [
        "model.v1.dense: in params.yaml, not in the README's table",
        "model.v1.dropout: in params.yaml, not in the README's table",
    ]
    assert split_values("`a`, {x: 1, y: [2, 3]}, 4") == ["`a`", "{x: 1, y: [2, 3]}", "4"]
