"""`make bench`: each stage of ours against the straightforward way (FIDLE's notebooks), in the same run.

    python -m bench.run [--scale full|tiny] [--out bench/results.json] [--data-dir bench/data]

Data: synthetic GTSRB archives in the official format, generated once and cached (full: 39,210 train
+ 12,660 test images of 15-250 px; tiny: a few hundred). Every ratio is "times better than the
baseline" (> 1: ours wins). TensorFlow measures run one per process, so each peak RSS is its own.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

import h5py
import yaml

from bench import baselines
from trafficsigns.core.config import Params, load_params
from trafficsigns.core.paths import DATASET, RAW_DIR
from trafficsigns.data.archives import read_test_split, read_train_split
from trafficsigns.data.augment import augment_split
from trafficsigns.data.dataset import build_dataset
from trafficsigns.data.h5store import CHUNK_IMAGES, image_chunks, read_dataset, write_dataset
from trafficsigns.data.sources import GTSRB_FILES
from trafficsigns.data.synthetic import write_synthetic_gtsrb
from trafficsigns.stages import prepare

ROOT = Path(__file__).resolve().parents[1]
SYNTHETIC = {  # write_synthetic_gtsrb arguments: image sides 15-250 px, GTSRB's class frequencies
    "full": {
        "seed": 0,
        "train_tracks_per_class": 30.3,
        "test_tracks_per_class": 9.8,
        "frames_per_track": 30,
        "min_size": 5,
        "max_size": 205,
    },
    "tiny": {
        "seed": 0,
        "train_tracks_per_class": 1,
        "test_tracks_per_class": 1,
        "frames_per_track": 3,
        "min_size": 5,
        "max_size": 205,
    },
}
PREPARE = ((24, "L"), (48, "RGB"), (48, "L-CLAHE"))
TRAIN = (("v1", 24, "L"), ("v2", 48, "RGB"))
# (warm-up steps, timed steps) per model; rounds alternate ours and baseline, the best of each is kept
STEPS = {"full": {"v1": (5, 100), "v2": (3, 30)}, "tiny": {"v1": (1, 2), "v2": (1, 2)}}
ROUNDS = {"full": 2, "tiny": 1}
DEFAULT_EPOCHS = load_params(ROOT / "params.yaml").train.epochs  # what re-running the notebooks end to end costs
# the committed pipeline, shrunk for --scale tiny (a no-op's cost does not depend on the data's size)
TINY_PIPELINE = {
    "data": {"synthetic": {"train_tracks_per_class": 2, "test_tracks_per_class": 1, "frames_per_track": 3}},
    "model": {"name": "mnist_cnn"},
    "train": {"epochs": 1},
}


def ensure_data(data_dir: Path, scale: str) -> Path:
    """The scale's archives, generated on first use and reused while the generator arguments match."""
    raw, marker = data_dir / scale, data_dir / scale / "synthetic.json"
    if not (marker.exists() and json.loads(marker.read_text()) == SYNTHETIC[scale]):
        print(f"generating {scale}-scale synthetic GTSRB in {raw} (once)...", flush=True)
        raw.mkdir(parents=True, exist_ok=True)
        write_synthetic_gtsrb(raw, **SYNTHETIC[scale])
        marker.write_text(json.dumps(SYNTHETIC[scale]))
    return raw


def bench_data(mirror: Path | None, data_dir: Path, scale: str) -> tuple[Path, str]:
    """(raw folder, data.source): `mirror`, a folder with the three official GTSRB archives, or synthetic."""
    if mirror is None:
        return ensure_data(data_dir, scale), "synthetic"
    missing = [name for name in GTSRB_FILES if not (mirror / name).is_file()]
    if missing:
        raise SystemExit(f"error: --mirror {mirror} lacks {', '.join(missing)}")
    return mirror, "gtsrb"


def prepared(raw: Path, source: str, params: Params, folder: Path) -> tuple[Path, Path | None, float]:
    """What the prepare and augment stages make of `raw` with `params`, in `folder`: the dataset, the
    augmented training split (None when augment.* adds nothing) and the seconds both took."""
    started = time.perf_counter()
    folder.mkdir(parents=True, exist_ok=True)
    ds, _ = build_dataset(raw, params.prepare, source)
    write_dataset(folder / "dataset.h5", ds)
    augmented = None
    if params.augment.copies or params.augment.balance:
        augmented = folder / "train.h5"
        augment_split(ds, augmented, params.augment)
    return folder / "dataset.h5", augmented, time.perf_counter() - started


def timed(fn, *args, **kwargs):
    started = time.perf_counter()
    result = fn(*args, **kwargs)
    return time.perf_counter() - started, result


def prepare_ours(raw: Path, project: Path, size: int, mode: str) -> float:
    """The real `prepare` stage (archives -> HDF5 + data plots) in a scratch project; its seconds."""
    (project / RAW_DIR).parent.mkdir(parents=True)
    (project / RAW_DIR).symlink_to(raw.resolve())
    committed = load_params(ROOT / "params.yaml")
    params = committed.model_copy(update={"prepare": committed.prepare.model_copy(update={"size": size, "mode": mode})})
    with contextlib.chdir(project):
        seconds, _ = timed(prepare.main, params)
    return seconds


def measure_prepare(raw: Path, work: Path, images: int) -> tuple[dict, dict]:
    """prepare at each variant, ours vs baseline; also returns the datasets the TF measures read."""
    measures, datasets = {}, {}
    for size, mode in PREPARE:
        name = f"{size}-{mode}"
        first = prepare_ours(raw, work / f"ours-{name}", size, mode)
        fidle_h5 = work / f"fidle-{name}.h5"
        base, count = timed(baselines.prepare, raw, work / f"fidle-{name}", size, mode, fidle_h5)
        shutil.rmtree(work / f"fidle-{name}")  # the extracted images
        assert count == images, (count, images)
        # ours is short and the baseline long: one run before it and one after, the best kept, so that
        # a load spike from other users of the machine does not decide the ratio
        ours = min(first, prepare_ours(raw, work / f"again-{name}", size, mode))
        shutil.rmtree(work / f"again-{name}")
        measures[f"prepare {size}px {mode}"] = rate(images / ours, images / base, "images/s")
        if (size, mode) == PREPARE[0]:
            measures[f"prepare {size}px {mode}, whole set"] = cost(ours, base, "s")
        datasets[(size, mode)] = (work / f"ours-{name}" / DATASET, fidle_h5)
        if (size, mode) not in {(s, m) for _, s, m in TRAIN}:  # ~1 GiB each at full scale
            shutil.rmtree(work / f"ours-{name}")
            fidle_h5.unlink()
    return measures, datasets


def measure_h5_read(ours_h5: Path, fidle_h5: Path, images: int) -> dict:
    """Reading every split back (warm page cache): float32 chunked vs the notebook's float64 contiguous."""
    ours, _ = timed(read_dataset, ours_h5)
    base, _ = timed(baselines.read_h5_dataset, fidle_h5)
    return {"HDF5 read, all splits (24px L)": rate(images / ours, images / base, "images/s")}


def compression_table(ours_h5: Path, work: Path) -> list[dict]:
    """Whole-split reads (what train and evaluate do) of x_train at each HDF5 compression, same chunks."""
    with h5py.File(ours_h5) as f:
        x = f["x_train"][...]
    rows = []
    for label, options in (
        ("none", {}),
        ("lzf", {"compression": "lzf"}),
        ("gzip 1", {"compression": "gzip", "compression_opts": 1}),
        ("gzip 4", {"compression": "gzip", "compression_opts": 4}),
    ):
        path = work / "compression.h5"
        with h5py.File(path, "w") as f:
            write_s, _ = timed(f.create_dataset, "x", data=x, chunks=image_chunks(x.shape), **options)
        with h5py.File(path) as f:
            read_s, _ = timed(lambda: f["x"][...])
        rows.append(
            {
                "compression": label,
                "MiB": round(path.stat().st_size / 2**20, 1),
                "write_s": round(write_s, 2),
                "read_MiB_per_s": round(x.nbytes / 2**20 / read_s),
            }
        )
        path.unlink()
    return rows


def worker(**spec) -> dict:
    """One measure in a fresh process (bench.worker): its images/s and its own peak RSS."""
    out = sh(ROOT, sys.executable, "-m", "bench.worker", json.dumps(spec))
    return json.loads(out.strip().splitlines()[-1])


def measure_train(datasets: dict, scale: str, train_images: int) -> tuple[dict, dict]:
    """Training images/s over fixed steps after a warm-up, extrapolated to one epoch; peak RSS."""
    measures, epochs = {}, {}
    for model, size, mode in TRAIN:
        warmup, steps = STEPS[scale][model]
        paths = dict(zip(("ours", "baseline"), datasets[(size, mode)]))
        runs = {impl: [] for impl in paths}
        for round_ in range(ROUNDS[scale]):
            for impl, path in paths.items():
                runs[impl].append(
                    worker(
                        measure="train",
                        impl=impl,
                        dataset=str(path),
                        model=model,
                        warmup=warmup,
                        steps=steps,
                        options=impl == "ours" and not round_,
                    )
                )
        speed = {impl: max(r["images_per_s"] for r in rs) for impl, rs in runs.items()}
        memory = {impl: max(r["peak_rss_mib"] for r in rs) for impl, rs in runs.items()}
        label = f"train {model} {size}px {mode}"
        epochs[model] = {impl: train_images / s for impl, s in speed.items()}
        measures[label] = rate(speed["ours"], speed["baseline"], "images/s")
        measures[f"{label}, epoch of {train_images:,} images"] = cost(
            epochs[model]["ours"], epochs[model]["baseline"], "s"
        )
        measures[f"{label}, peak RSS"] = cost(memory["ours"], memory["baseline"], "MiB")
        for option, images_per_s in runs["ours"][0]["options"].items():  # one round: they are not the default
            measures[f"{label}, train.{option}"] = rate(images_per_s, speed["baseline"], "images/s")
    return measures, epochs


def measure_predict(datasets: dict) -> dict:
    ours_h5, fidle_h5 = datasets[(24, "L")]
    ours = worker(measure="predict", impl="ours", dataset=str(ours_h5), model="v1")
    base = worker(measure="predict", impl="baseline", dataset=str(fidle_h5), model="v1")
    return {"predict v1 24px L (test set)": rate(ours["images_per_s"], base["images_per_s"], "images/s")}


def sh(cwd: Path, *args: str) -> str:
    """Run a command quietly (TensorFlow's and DVC's chatter hidden); its stdout, or its stderr on failure."""
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "DVC_NO_ANALYTICS": "1",
    }
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if done.returncode:
        raise RuntimeError(f"{' '.join(args)} failed ({done.returncode}) in {cwd}:\n{done.stderr[-3000:]}")
    return done.stdout


def noop_repro_seconds(scale: str, work: Path) -> float:
    """Median of 3 `dvc repro` runs with nothing changed, in a fresh clone of this repo's HEAD.

    The clone first reproduces the committed default pipeline (its own data, through DVC); --scale
    tiny shrinks that pipeline's params, since a no-op only compares hashes and timestamps.
    """
    clone = work / "clone"
    sh(work, "git", "clone", "--quiet", str(ROOT), str(clone))
    if scale == "tiny":
        params = yaml.safe_load((clone / "params.yaml").read_text())
        for section, values in TINY_PIPELINE.items():
            merge(params[section], values)
        (clone / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh(clone, "dvc", "repro")
    return statistics.median(timed(sh, clone, "dvc", "repro")[0] for _ in range(3))


def merge(into: dict, values: dict) -> dict:
    """`values` written over `into`, nested sections key by key; returns `into`."""
    for key, value in values.items():
        if isinstance(value, dict):
            merge(into[key], value)
        else:
            into[key] = value
    return into


def measure_repro(scale: str, work: Path, baseline_stages: float) -> dict:
    """No-op `dvc repro` vs the notebooks' only way to "reproduce": run them all again."""
    return {"dvc repro, nothing changed": cost(noop_repro_seconds(scale, work), baseline_stages, "s")}


def rate(ours: float, baseline: float, unit: str) -> dict:
    """A figure where higher is better (images/s): the ratio is ours / baseline."""
    return _figure(ours, baseline, unit, "higher", ours / baseline)


def cost(ours: float, baseline: float, unit: str) -> dict:
    """A figure where lower is better (seconds, MiB): the ratio is baseline / ours."""
    return _figure(ours, baseline, unit, "lower", baseline / ours)


def _figure(ours: float, baseline: float, unit: str, better: str, ratio: float) -> dict:
    return {
        "unit": unit,
        "better": better,
        "ours": ours,
        "baseline": baseline,
        "ratio": ratio,
        "load_average": os.getloadavg()[0],
    }


def machine() -> dict:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return {
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "gpu": "none (GPU not measured)",
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        "tensorflow": version("tensorflow"),
        "load_average_at_start": os.getloadavg()[0],
    }


def run(scale: str, data_dir: Path) -> dict:
    raw = ensure_data(data_dir, scale)
    train_images, test_images = len(read_train_split(raw)), len(read_test_split(raw))
    images = train_images + test_images
    results = {"scale": scale, "machine": machine(), "images": {"train": train_images, "test": test_images}}
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        work = Path(tmp)
        measures, datasets = measure_prepare(raw, work, images)
        measures |= measure_h5_read(*datasets[(24, "L")], images)
        results["h5_compression"] = compression_table(datasets[(48, "RGB")][0], work)
        train, epochs = measure_train(datasets, scale, train_images)
        measures |= train | measure_predict(datasets)
        predict = measures["predict v1 24px L (test set)"]["baseline"]
        notebooks = (
            measures["prepare 24px L, whole set"]["baseline"]
            + DEFAULT_EPOCHS * epochs["v1"]["baseline"]
            + test_images / predict
        )
        measures |= measure_repro(scale, work, notebooks)
    results["measures"] = measures
    results["machine"]["load_average_at_end"] = os.getloadavg()[0]
    return results


def report(results: dict) -> str:
    m = results["machine"]
    lines = [
        f"bench ({results['scale']}): {results['images']['train']:,} train + {results['images']['test']:,} "
        f"test images; {m['cpus']} CPUs ({m['cpu']}), {m['gpu']}; load average {m['load_average_at_start']:.1f} "
        f"at start, {m['load_average_at_end']:.1f} at end",
        f"{'measure':52} {'unit':>9} {'ours':>10} {'baseline':>10} {'ratio':>7} {'load':>5}",
    ]
    for name, r in results["measures"].items():
        lines.append(
            f"{name:52} {r['unit']:>9} {r['ours']:>10,.1f} {r['baseline']:>10,.1f} {r['ratio']:>6.2f}x "
            f"{r['load_average']:>5.1f}"
        )
    lines += [
        "ratio: times better than the baseline (> 1: ours wins); load: the machine's 1-minute load average "
        "when the measure ended. Prepare: ours best of a run before and one after the baseline's. Train: "
        "images/s over fixed steps after a warm-up, best of the rounds, each round in fresh processes; "
        "epoch seconds extrapolated from it. Baseline of the no-op repro: the notebooks re-run "
        "(prepare 24px L + 5 epochs of v1 + predict).",
        f"HDF5 compression of x_train 48px RGB, chunks of {CHUNK_IMAGES} images:",
    ]
    lines += [
        f"  {r['compression']:7} {r['MiB']:>8,.1f} MiB  write {r['write_s']:5.2f} s  "
        f"read {r['read_MiB_per_s']:>6,} MiB/s"
        for r in results["h5_compression"]
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=sorted(SYNTHETIC), default="full")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results.json")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=ROOT / "bench" / "data",
        help="where the generated archives are cached (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    results = run(args.scale, args.data_dir)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(report(results))
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
