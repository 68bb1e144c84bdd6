"""`make bench-gpu`: the default training on a GPU, float32 against mixed precision, XLA and a larger batch.

    python -m bench.gpu [--mirror DIR] [--data-dir bench/data] [--no-install] [--out FILE]

Where nvidia-smi lists a GPU that TensorFlow does not see, it first installs the `gpu` extra
(pyproject.toml: TensorFlow's CUDA wheels) into this venv. Data: the synthetic GTSRB archives at full
scale (bench.run's, cached), or `--mirror`, a folder holding the three official GTSRB archives,
prepared as params.yaml says. Every variant trains the committed model and settings (no validation) for
a few epochs, all in one process; the first epoch pays for tracing and XLA compilation, the later ones
are timed. Three variants run twice, and their weights are compared: what op determinism guarantees,
and what XLA (which Keras refuses with op determinism on) gives up. Without a GPU it says so and runs a
tiny CPU version (narrow model, a few hundred images, no XLA) in seconds, so that CI checks the script.
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

from bench.run import ROOT, bench_data, merge, prepared, sh, worker
from trafficsigns.core.config import load_params
from trafficsigns.core.fsutil import write_text

LARGE_BATCH = 8  # times train.batch_size: a GPU is underused by the committed 64
EPOCHS = {"gpu": 4, "cpu": 2}  # the first is warm-up; the median of the others is reported
FLOAT32 = {"mixed_precision": False}  # the committed default trains in mixed precision
# name, train.* overrides, op determinism (Keras refuses XLA with it on), run twice to compare weights
VARIANTS = (
    ("float32 (baseline)", FLOAT32, True, True),
    ("float32, op determinism off", FLOAT32, False, True),
    ("mixed precision", {"mixed_precision": True}, True, False),
    ("XLA (jit_compile)", {**FLOAT32, "jit_compile": True}, False, True),
    ("mixed precision + XLA", {"mixed_precision": True, "jit_compile": True}, False, False),
    ("float32, large batch", {**FLOAT32, "batch_size": LARGE_BATCH}, True, False),
    (
        "mixed precision + XLA, large batch",
        {"mixed_precision": True, "jit_compile": True, "batch_size": LARGE_BATCH},
        False,
        False,
    ),
)


def gpu_listed() -> bool:
    """Whether the NVIDIA driver lists a GPU (`nvidia-smi -L`), whatever TensorFlow sees."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return False
    done = subprocess.run([smi, "-L"], capture_output=True, text=True, stdin=subprocess.DEVNULL)
    return done.returncode == 0 and "GPU" in done.stdout


def tensorflow_gpus() -> int:
    """GPUs TensorFlow sees, asked in a fresh process: this one never loads TensorFlow, so it may install."""
    out = sh(ROOT, sys.executable, "-c", "import tensorflow as tf; print(len(tf.config.list_physical_devices('GPU')))")
    return int(out.split()[-1])


def install_gpu_extra() -> None:
    """pyproject's `gpu` extra, constrained by requirements.lock, into this interpreter's environment."""
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["gpu"]
    print(f"a GPU is listed but TensorFlow sees none: installing {' '.join(extra)} into {sys.prefix}", flush=True)
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*command, "-c", str(ROOT / "requirements.lock"), *extra], check=True)


def use_gpu(install: bool) -> bool:
    """True when TensorFlow can train on a GPU here, after installing the extra if needed and allowed."""
    if not gpu_listed():
        print("no GPU found (nvidia-smi is absent or lists none): running the tiny CPU version", flush=True)
        return False
    if not tensorflow_gpus() and install:
        install_gpu_extra()
    if not tensorflow_gpus():
        raise SystemExit("error: nvidia-smi lists a GPU but TensorFlow cannot use it (run without --no-install)")
    return True


def variant_runs(kind: str) -> list[tuple[str, dict]]:
    """(name, worker run) per training, repeated variants twice; the committed params, tiny on a CPU."""
    committed = load_params(ROOT / "params.yaml").as_yaml()
    base = {"train": {"epochs": EPOCHS[kind]}}
    if kind == "cpu":
        base["model"] = {"resnet": {"filters": 4}}
    runs = []
    for name, overrides, determinism, twice in VARIANTS:
        if kind == "cpu" and overrides.get("jit_compile"):  # on a CPU XLA compiles for a minute, then runs slower
            continue
        train = dict(overrides)
        if "batch_size" in train:
            train["batch_size"] *= committed["train"]["batch_size"]
        params = merge(merge(copy.deepcopy(committed), base), {"train": train})
        runs += [(name, {"params": params, "op_determinism": determinism})] * (2 if twice else 1)
    return runs


def run(kind: str, dataset: Path) -> dict:
    runs = variant_runs(kind)
    out = worker(measure="fit", dataset=str(dataset), runs=[r for _, r in runs], validate=False)
    results = {}
    for (name, spec), result in zip(runs, out["runs"]):
        result |= {"batch_size": spec["params"]["train"]["batch_size"], "op_determinism": spec["op_determinism"]}
        results.setdefault(name, []).append(result)
    return {"kind": kind, "gpus": out["gpus"], "train_images": out["train_images"], "variants": results}


def rows(results: dict) -> list[dict]:
    """One row per variant: median epoch seconds after the first, images/s, ratio to the float32 baseline."""
    table = []
    for name, runs in results["variants"].items():
        first = runs[0]
        row = {"variant": name, "batch": first["batch_size"], "determinism": first["op_determinism"]}
        if "error" in first:
            table.append(row | {"error": first["error"]})
            continue
        seconds = statistics.median(e["train_seconds"] for e in first["epochs"][1:])
        row |= {"policy": first["policy"], "epoch_s": seconds, "images_per_s": results["train_images"] / seconds}
        if len(runs) == 2 and "error" not in runs[1]:
            row["same_weights_twice"] = first["weights_md5"] == runs[1]["weights_md5"]
        table.append(row)
    baseline = table[0].get("images_per_s")
    for row in table:
        if baseline and "images_per_s" in row:
            row["ratio"] = row["images_per_s"] / baseline
    return table


def report(results: dict, table: list[dict]) -> str:
    device = f"{results['gpus']} GPU(s)" if results["kind"] == "gpu" else "CPU only (tiny version, no GPU found)"
    lines = [
        f"bench.gpu: {device}; {results['train_images']:,} training images per epoch, epochs after the first timed",
        f"{'variant':36} {'batch':>5} {'policy':>14} {'determ.':>7} {'epoch s':>8} {'images/s':>10} {'ratio':>6}"
        f"  same weights twice",
    ]
    for r in table:
        if "error" in r:
            lines.append(f"{r['variant']:36} {r['batch']:>5}  failed: {r['error']}")
            continue
        twice = {True: "yes", False: "NO"}.get(r.get("same_weights_twice"), "")
        lines.append(
            f"{r['variant']:36} {r['batch']:>5} {r['policy']:>14} {'on' if r['determinism'] else 'off':>7} "
            f"{r['epoch_s']:>8.2f} {r['images_per_s']:>10,.0f} {r.get('ratio', 0):>5.2f}x  {twice}"
        )
    lines.append(
        "ratio: images/s against float32 (baseline) in this run. determ.: TensorFlow's op determinism; XLA "
        "needs it off. same weights twice: two runs of that variant in one process, weights compared bit for bit."
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mirror", type=Path, help="folder with the official GTSRB archives (default: synthetic)")
    parser.add_argument("--data-dir", type=Path, default=ROOT / "bench" / "data", help="synthetic archives' cache")
    parser.add_argument("--no-install", action="store_true", help="never pip-install the gpu extra")
    parser.add_argument("--out", type=Path, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    kind = "gpu" if use_gpu(install=not args.no_install) else "cpu"
    started = time.perf_counter()
    if kind == "cpu" and args.mirror:
        print(f"--mirror {args.mirror} left aside: the CPU version runs on tiny synthetic data", flush=True)
    raw, source = bench_data(args.mirror if kind == "gpu" else None, args.data_dir, "full" if kind == "gpu" else "tiny")
    params = load_params(ROOT / "params.yaml")
    unaugmented = params.model_copy(update={"augment": params.augment.model_copy(update={"copies": 0, "balance": 0})})
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as tmp:
        dataset, _, _ = prepared(raw, source, unaugmented, Path(tmp))
        results = run(kind, dataset)
    table = rows(results)
    print(report(results, table))
    print(f"bench.gpu took {time.perf_counter() - started:.0f} s")
    if args.out:
        write_text(args.out, json.dumps({**results, "table": table}, indent=2) + "\n")


if __name__ == "__main__":
    main()
