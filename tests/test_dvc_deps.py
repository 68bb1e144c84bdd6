"""dvc.yaml's code deps are the project modules each stage imports: a missing one would leave stale results
cached when that module changes (the one thing a DVC pipeline must never do), an extra one re-runs a stage
for nothing. The modules are found by following the imports from `trafficsigns/stages/<name>.py`."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from tests.helpers import ROOT

PACKAGE = "trafficsigns"


def module_file(name: str) -> Path | None:
    """The file of a project module (`trafficsigns.data.h5store`), or None if `name` is not one."""
    base = ROOT / Path(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def imported_modules(path: Path) -> set[str]:
    """Every project module that `path` imports, at the top or inside a function, with its parent packages."""
    tree = ast.parse(path.read_text())
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}".rstrip(".")
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)  # `from pkg import module`
    found = set()
    for name in names:
        parts = name.split(".")
        found.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return {name for name in found if name.split(".")[0] == PACKAGE and module_file(name)}


def only_a_docstring(path: Path) -> bool:
    """A package `__init__` that holds nothing but its docstring cannot change what a stage computes."""
    body = ast.parse(path.read_text()).body
    return all(isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) for node in body)


def code_deps(stage: str) -> set[str]:
    """Repo-relative files of every project module reachable from the stage's module."""
    todo, seen = [f"{PACKAGE}.stages.{stage}"], set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo.extend(imported_modules(module_file(name)) - seen)
        parts = name.split(".")
        todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))  # parent packages run first
    files = (module_file(name) for name in seen)
    return {str(f.relative_to(ROOT)) for f in files if not (f.name == "__init__.py" and only_a_docstring(f))}


def coverage_problems(stage: str, declared: list) -> list[str]:
    """What is wrong with one stage's declared deps: modules it imports but lacks, code deps it never imports."""
    deps = [d if isinstance(d, str) else next(iter(d)) for d in declared]
    needed = code_deps(stage)
    covered = lambda f: any(f == d or f.startswith(d.rstrip("/") + "/") for d in deps)  # noqa: E731
    missing = sorted(f for f in needed if not covered(f))
    stale = sorted(d for d in deps if d.endswith(".py") and d not in needed)
    return [f"{stage} imports {f} but dvc.yaml does not list it" for f in missing] + [
        f"{stage} lists {d} but never imports it" for d in stale
    ]


PIPELINE = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


@pytest.mark.parametrize("stage", sorted(PIPELINE))
def test_stage_deps_are_exactly_its_imports(stage):
    assert coverage_problems(stage, PIPELINE[stage]["deps"]) == []


def test_a_removed_dep_is_caught():
    deps = PIPELINE["train"]["deps"]
    for dep in (d for d in deps if str(d).startswith(PACKAGE)):
        problems = coverage_problems("train", [d for d in deps if d != dep])
        assert any(dep in p for p in problems), f"removing {dep} went unnoticed"


def test_lazy_imports_count():
    """An import inside a function is a dependency too: export's stage imports TensorFlow code lazily."""
    assert "trafficsigns/modeling/export.py" in code_deps("export")
