"""One TensorFlow measure per process, so that its peak RSS is its own: `python -m bench.worker <json>`.

Prints one JSON line: images/s and the process's peak resident memory (MiB), everything included
(interpreter, TensorFlow, data, model); `fit` (bench.gpu, bench.tta): whole epochs, timed. Linux (reads /proc).
"""

from __future__ import annotations

import functools
import hashlib
import json
import sys
import time
from pathlib import Path

import keras
import tensorflow as tf
from tensorflow.python.framework import config as tf_config  # disable_op_determinism has no public alias

import trafficsigns  # noqa: F401  (sets TensorFlow's environment before it loads)
from bench import baselines
from trafficsigns.core.config import ModelParams, TrainParams, load_params, parse_params
from trafficsigns.data.classes import NUM_GTSRB_CLASSES
from trafficsigns.data.h5store import read_dataset
from trafficsigns.modeling.models import build_model
from trafficsigns.modeling.training import _new_model, fit_batches, make_deterministic

# The committed params.yaml's settings (train.*, evaluate.batch_size, each model's widths): what `dvc repro` runs.
PARAMS = load_params(Path(__file__).resolve().parents[1] / "params.yaml")
VALIDATION_STEPS = 2  # the validation data is set up (its memory counted) but barely run: not timed anyway


class StepClock(keras.callbacks.Callback):
    """Time of the end of every training step."""

    def __init__(self):
        super().__init__()
        self.ends = []

    def on_train_batch_end(self, batch, logs=None):
        self.ends.append(time.perf_counter())


def _rate(clock: StepClock, warmup: int, batch_size: int) -> float:
    """Training images/s over the steps after `warmup` (which pay for tracing and first allocations)."""
    ends = clock.ends[warmup - 1 :]
    return (len(ends) - 1) * batch_size / (ends[-1] - ends[0])


def model_params(name: str) -> ModelParams:
    """params.yaml's model section with `name` chosen: that model with its own committed widths."""
    return PARAMS.model.model_copy(update={"name": name})


# train.* switches timed flipped after the default, in the same process: jit_compile last, as it turns op
# determinism off
OPTIONS = ("mixed_precision", "jit_compile")


def _fit_ours(ds, model: str, params: TrainParams, warmup: int, steps: int) -> float:
    """What trafficsigns/stages/train.py does, for a fixed number of steps: images/s."""
    clock = StepClock()
    make_deterministic(params.seed, params.jit_compile)
    net = _new_model(ds, model_params(model), params)
    train_batches, val_batches = fit_batches(ds, params, PARAMS.augment)
    net.fit(
        train_batches,
        validation_data=val_batches,
        epochs=1,
        shuffle=False,
        verbose=0,
        callbacks=[clock],
        steps_per_epoch=warmup + steps,
        validation_steps=VALIDATION_STEPS,
    )
    return _rate(clock, warmup, params.batch_size)


def train(impl: str, dataset: str, model: str, warmup: int, steps: int, options: bool = False) -> dict:
    """images/s and peak RSS of the default settings; with `options`, images/s with each of OPTIONS flipped
    (keyed `mixed_precision=false` where the default has it on)."""
    params = PARAMS.train
    if impl == "ours":
        ds = read_dataset(dataset, splits=("train", "val"))
        fit = functools.partial(_fit_ours, ds, model, warmup=warmup, steps=steps)
        result = {"images_per_s": fit(params), "peak_rss_mib": peak_rss_mib()}
        if options:  # the peak RSS above is the default's alone
            flipped = {option: not getattr(params, option) for option in OPTIONS}
            result["options"] = {
                f"{option}={str(on).lower()}": fit(params.model_copy(update={option: on}))
                for option, on in flipped.items()
            }
        return result
    clock = StepClock()
    x_train, y_train, x_test, y_test = baselines.read_h5_dataset(dataset)
    keras.utils.set_random_seed(params.seed)
    net = baselines.compile_model(build_model(model_params(model), x_train.shape[1:], NUM_GTSRB_CLASSES))
    baselines.fit(
        net,
        x_train,
        y_train,
        x_test,
        y_test,
        callbacks=[clock],
        steps_per_epoch=warmup + steps,
        validation_steps=VALIDATION_STEPS,
    )
    return {"images_per_s": _rate(clock, warmup, params.batch_size)}


def predict(impl: str, dataset: str, model: str) -> dict:
    """The evaluate stage's prediction (evaluate.batch_size) vs the notebook's `model.predict(x_test)`."""
    if impl == "ours":
        x = read_dataset(dataset, splits=("test",)).x["test"]
        batch_size = PARAMS.evaluate.batch_size
    else:
        x = baselines.read_h5_dataset(dataset)[2]
        batch_size = None  # Keras' default, as the notebook calls it
    net = build_model(model_params(model), x.shape[1:], NUM_GTSRB_CLASSES)
    net.predict(x[:512], batch_size=batch_size, verbose=0)  # traces the predict function
    started = time.perf_counter()
    net.predict(x, batch_size=batch_size, verbose=0)
    return {"images_per_s": len(x) / (time.perf_counter() - started)}


class EpochClock(keras.callbacks.Callback):
    """Per epoch: training seconds (validation excluded), wall seconds since `started`, val accuracy.

    Stops training once val accuracy reaches `target`, or after the batch that passes `budget_s`.
    """

    def __init__(self, started: float, target: float | None = None, budget_s: float | None = None):
        super().__init__()
        self.started, self.target, self.budget_s = started, target, budget_s
        self.epochs = []

    def on_epoch_begin(self, epoch, logs=None):
        self.t0, self.t_val = time.perf_counter(), None

    def on_test_begin(self, logs=None):
        self.t_val = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        if self.budget_s is not None and time.perf_counter() - self.started > self.budget_s:
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        end = time.perf_counter()
        record = {"train_seconds": (self.t_val or end) - self.t0, "elapsed_s": end - self.started}
        if "val_accuracy" in (logs or {}):
            record["val_accuracy"] = float(logs["val_accuracy"])
            if self.target is not None and record["val_accuracy"] >= self.target:
                self.model.stop_training = True
        self.epochs.append(record)


def fit_run(ds, params, op_determinism: bool, validate: bool, target, budget_s, started: float) -> dict:
    """One training as the train stage runs it (same model, batches, augmenter), timed per epoch."""
    t = params.train
    make_deterministic(t.seed, t.jit_compile)
    if not op_determinism:
        tf_config.disable_op_determinism()
    net = _new_model(ds, params.model, t)
    clock = EpochClock(started, target, budget_s)
    train_batches, val_batches = fit_batches(ds, t, params.augment)
    net.fit(
        train_batches,
        validation_data=val_batches if validate else None,
        epochs=t.epochs,
        shuffle=False,
        verbose=0,
        callbacks=[clock],
    )
    weights = hashlib.md5(b"".join(w.tobytes() for w in net.get_weights())).hexdigest()
    return {"epochs": clock.epochs, "policy": net.dtype_policy.name, "weights_md5": weights}


def fit(
    dataset: str,
    runs: list[dict],
    train_dataset: str | None = None,
    validate: bool = True,
    target: float | None = None,
    budget_s: float | None = None,
) -> dict:
    """Each run ({"params": a whole params dict, "op_determinism": bool}) in turn, in this process.

    `train_dataset`: the augment stage's output, whose train split replaces the prepared one. A run that
    fails is reported by its error, and the next one runs. Wall time counts from the data's reading.
    """
    started = time.perf_counter()
    ds = read_dataset(dataset, splits=("train", "val"))
    if train_dataset:
        augmented = read_dataset(train_dataset, splits=("train",))
        ds.x["train"], ds.y["train"] = augmented.x["train"], augmented.y["train"]
    results = []
    for run in runs:
        try:
            params = parse_params(run["params"])
            results.append(fit_run(ds, params, run["op_determinism"], validate, target, budget_s, started))
        except Exception as exc:  # noqa: BLE001  (one variant's failure, e.g. XLA on a device, is a result)
            results.append({"error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]})
        started = time.perf_counter()
    devices = [d.device_type for d in tf.config.list_physical_devices()]
    return {"runs": results, "train_images": len(ds.y["train"]), "gpus": devices.count("GPU")}


def peak_rss_mib() -> float:
    """This process's peak resident memory (VmHWM): ru_maxrss would count the parent's, inherited at fork."""
    line = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def main(spec: dict) -> None:
    measure = {"train": train, "predict": predict, "fit": fit}[spec.pop("measure")]
    result = measure(**spec)
    result.setdefault("peak_rss_mib", peak_rss_mib())
    print(json.dumps(result))


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
