"""What tests share: params built as the committed params.yaml plus overrides, and one project builder.

The code holds no defaults (params.yaml is the only source), so a test states what it changes and
nothing else: `make_params({"prepare": {"image_size": 24, "mode": "L"}, "train": {"epochs": 2}})`.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from trafficsigns.core.config import AugmentParams, Params, parse_params

ROOT = Path(__file__).resolve().parents[1]
COMMITTED_PARAMS = ROOT / "params.yaml"

# The tiny pipeline most tests run: small images, the course's small CNN, two short epochs, a constant
# learning rate and no offline augmentation (the committed copies would triple every tiny training set).
TINY_PARAMS = {
    "prepare": {"image_size": 24, "mode": "L"},
    "augment": {"copies": 0},
    "model": {"name": "mnist_cnn"},
    "train": {"epochs": 2, "batch_size": 32, "lr_schedule": "constant"},
}
# Light dropout, 12 epochs: a small CNN whose classes depend on the image (not a near-uniform one).
QUICK_TRAINING = {
    "model": {"name": "mnist_cnn", "conv_dropout": 0.0, "mnist_cnn": {"dropout": 0.1}},
    "train": {"epochs": 12, "learning_rate": 0.005},
}
# The committed augment section with every transform off: tests of one transform switch on only that one.
NO_AUGMENT = {"preset": "custom", "copies": 0, "flip": False, **dict.fromkeys(AugmentParams.PHOTOMETRY, 0.0)}


def merge(base: dict, overrides: dict) -> dict:
    """A new dict: `base` with `overrides` merged in, section by section (a nested dict merges, a value replaces)."""
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def committed_params() -> dict:
    """The committed params.yaml, as a fresh dict."""
    return yaml.safe_load(COMMITTED_PARAMS.read_text())


def params_dict(*overrides: dict) -> dict:
    """The committed params.yaml with each of `overrides` merged in, in order (not validated)."""
    raw = committed_params()
    for override in overrides:
        raw = merge(raw, override)
    return raw


def make_params(*overrides: dict) -> Params:
    """The committed params.yaml with `overrides` merged in, validated."""
    return parse_params(params_dict(*overrides))


def tiny_params(*overrides: dict) -> Params:
    """TINY_PARAMS, then `overrides`, on the committed params.yaml."""
    return make_params(TINY_PARAMS, *overrides)


def make_project(dest: Path, *, raw: Path | None = None, prepared: Path | None = None, params: dict | None = None):
    """A project folder as the stages find it, at `dest`, which is returned.

    raw: a folder of raw archives, copied to data/raw. prepared: a prepared dataset.h5, copied with its
    data plots (the project it came from, data/prepared and plots/data). params: overrides on the
    committed params.yaml, written to params.yaml (for stages run as subprocesses).
    """
    dest.mkdir(parents=True, exist_ok=True)
    if raw is not None:
        shutil.copytree(raw, dest / "data" / "raw")
    if prepared is not None:
        source = prepared.parents[2]
        shutil.copytree(prepared.parent, dest / "data" / "prepared")
        if (source / "plots" / "data").exists():
            shutil.copytree(source / "plots" / "data", dest / "plots" / "data")
    if params is not None:
        write_params(dest, params)
    return dest


def write_params(project: Path, overrides: dict) -> Path:
    path = project / "params.yaml"
    path.write_text(yaml.safe_dump(params_dict(overrides), sort_keys=False))
    return path


def run_stages(project: Path, params: Params, *stages: str, **kwargs) -> None:
    """Run stages in-process in `project`, in order, as `python -m trafficsigns.stages.<name>` would."""
    with contextlib.chdir(project):
        for stage in stages:
            importlib.import_module(f"trafficsigns.stages.{stage}").main(params, **kwargs.get(stage, {}))


def sh(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL)
    if check and result.returncode:
        raise AssertionError(f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def exp_run(repo: Path, *overrides: str) -> subprocess.CompletedProcess:
    """`dvc exp run -S key=value ...` in `repo`; each override is one `key=value`."""
    return sh(repo, "dvc", "exp", "run", *(arg for o in overrides for arg in ("-S", o)))


def copy_repo(dest: Path, params: dict | None = None) -> Path:
    """The repo's files as git sees them (tracked + new, not ignored), committed in a fresh git repo;
    `params` are overrides on the committed params.yaml."""
    files = sh(ROOT, "git", "ls-files", "--cached", "--others", "--exclude-standard", "-z").stdout.split("\0")
    for name in filter(None, files):
        if (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    if params is not None:
        write_params(dest, params)
    sh(dest, "git", "init", "-q")
    sh(dest, "git", "add", "-A")
    sh(dest, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "copy")
    return dest


def native_bf16() -> bool:
    """This host's answer, read from the kernel apart from the code under test: x86 avx512_bf16 or amx_bf16."""
    info = Path("/proc/cpuinfo")
    return bool(info.exists() and {"avx512_bf16", "amx_bf16"} & set(info.read_text().split()))


def lock(repo: Path) -> dict:
    """dvc.lock's stages."""
    return yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
