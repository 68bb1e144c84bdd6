"""Training loop: seeded and deterministic, tf.data input, dvclive logging, atomic checkpoints.

Over our ~400-line guide because a run and its resume are one story: the checkpoint state that
`train.resume` continues from, the dvclive log it rewinds, and the outputs published when the run ends
read best beside the loop that writes them. The model zoo lives in `models`, the metrics in `metrics`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from dvclive import Live
from keras import layers
from tensorflow.python.framework import config as tf_config  # disable_op_determinism has no public alias

from trafficsigns.core.config import AugmentParams, ModelParams, TrainParams
from trafficsigns.core.errors import PipelineError
from trafficsigns.core.fsutil import atomic_path, is_disk_full, write_text
from trafficsigns.core.host import cpu_flags, cpu_kind
from trafficsigns.core.paths import step_logs
from trafficsigns.data.h5store import Dataset
from trafficsigns.modeling.models import build_model, load_model, read_model_metadata, save_model
from trafficsigns.modeling.progress import Progress

log = logging.getLogger(__name__)


def make_deterministic(seed: int, jit_compile: bool) -> None:
    """Same seed + same data + same host kind -> same weights, bit for bit (CPU).

    Keras refuses XLA while op determinism is on, so `train.jit_compile` trades bit-reproducibility
    for speed: the seed still fixes initial weights and batch order. Keras' layer-name counters start
    afresh too (`conv2d`, not `conv2d_3`), so a model trained in a process that built others before is
    saved as the same bytes.
    """
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    if jit_compile:
        log.warning("train.jit_compile: op determinism is off, runs are no longer bit-reproducible")
        tf_config.disable_op_determinism()
    else:
        tf.config.experimental.enable_op_determinism()


def as_batches(
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int,
    shuffle_seed: int | None = None,
    augmenter: keras.Sequential | None = None,
) -> tf.data.Dataset:
    """Batches of (x, y), shuffled with `shuffle_seed` each epoch; x and y stay NumPy arrays, never copied.

    Only indices go through tf.data (shuffled and batched exactly as the images themselves would be:
    same order, same values), and each batch is gathered from the arrays: `from_tensor_slices((x, y))`
    held two extra copies of the split in memory and fed batches half as fast.
    """

    def gather(index):
        return x[index], y[index]

    def load(index):
        images, labels = tf.numpy_function(
            gather, [index], (tf.as_dtype(x.dtype), tf.as_dtype(y.dtype)), stateful=False
        )
        return tf.ensure_shape(images, (None, *x.shape[1:])), tf.ensure_shape(labels, (None, *y.shape[1:]))

    ds = tf.data.Dataset.range(len(x))
    if shuffle_seed is not None:
        ds = ds.shuffle(len(x), seed=shuffle_seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size).map(load)
    if augmenter is not None:
        ds = ds.map(lambda images, labels: (keras.ops.clip(augmenter(images, training=True), 0.0, 1.0), labels))
    return ds.prefetch(tf.data.AUTOTUNE)


def online_augmenter(params: AugmentParams, seed: int) -> keras.Sequential:
    """augment.*'s geometric and photometric ranges as Keras random layers, fresh draws every batch.

    Blur and the class-aware flips (which relabel) exist only offline, in the augment stage.
    """
    g = params.geometry()
    shear = math.tan(math.radians(g["shear"]))
    candidates = [
        (g["rotation"], lambda: layers.RandomRotation(g["rotation"] / 360, fill_mode="nearest", seed=seed)),
        (g["shift"], lambda: layers.RandomTranslation(g["shift"], g["shift"], fill_mode="nearest", seed=seed + 1)),
        (
            g["zoom"],
            lambda: layers.RandomZoom(
                (-g["zoom"], g["zoom"]), (-g["zoom"], g["zoom"]), fill_mode="nearest", seed=seed + 2
            ),
        ),
        (shear, lambda: layers.RandomShear(shear, shear, fill_mode="nearest", seed=seed + 3)),
        (params.brightness, lambda: layers.RandomBrightness(params.brightness, (0, 1), seed=seed + 4)),
        (params.contrast, lambda: layers.RandomContrast(params.contrast, (0, 1), seed=seed + 5)),
        (params.noise, lambda: layers.GaussianNoise(params.noise, seed=seed + 6)),
    ]
    chosen = [make() for strength, make in candidates if strength]
    if not chosen:
        raise PipelineError("train.online_augment: every augment.* range is 0; set some (e.g. augment.preset=fidle)")
    offline_only = [f"augment.{name}" for name, on in (("blur", params.blur), ("flip", params.flip)) if on]
    if offline_only:  # said, not silently dropped: the defaults set both
        log.info("online augmentation: %s apply only to the augment stage's copies", " and ".join(offline_only))
    return keras.Sequential(chosen, name="online_augment")


# dvclive's per-epoch wall-clock logs: kept in the checkpoint folder's log, published to the timings file only.
TIMING_LOGS = ("epoch_seconds", "images_per_second")


class EpochLogger(keras.callbacks.Callback):
    """Logs every epoch to dvclive: train/val loss and accuracy, epoch seconds and training images/s."""

    def __init__(self, live: Live, train_images: int):
        super().__init__()
        self.live, self.train_images = live, train_images

    def on_epoch_begin(self, epoch, logs=None):
        self.t0 = time.perf_counter()
        self.t_val = None

    def on_test_begin(self, logs=None):
        self.t_val = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        end = time.perf_counter()
        train_seconds = (self.t_val or end) - self.t0
        for key, value in (logs or {}).items():
            name = f"val/{key[4:]}" if key.startswith("val_") else f"train/{key}"
            self.live.log_metric(name, float(value))
        self.live.log_metric("epoch_seconds", end - self.t0)
        self.live.log_metric("images_per_second", self.train_images / train_seconds)
        self.live.next_step()


class LearningRateLogger(keras.callbacks.Callback):
    """Logs to dvclive the learning rate each epoch starts with (cosine schedule, plateau halvings), a curve
    of its own in `dvc plots`, at the step EpochLogger then closes."""

    def __init__(self, live: Live):
        super().__init__()
        self.live = live

    def on_epoch_begin(self, epoch, logs=None):
        self.live.log_metric("learning_rate", float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)))


class Checkpoints(keras.callbacks.Callback):
    """Keeps the model of the best val accuracy and the last one, each written atomically.

    Metadata `epoch` counts completed epochs, so a resumed run starts at that epoch.
    """

    def __init__(self, best: Path, last: Path, metadata: dict, best_accuracy: float = -1.0, best_epoch: int = 0):
        super().__init__()
        self.best, self.last, self.metadata = best, last, metadata
        self.best_accuracy, self.best_epoch = best_accuracy, best_epoch
        self.epochs_done = best_epoch

    def on_epoch_end(self, epoch, logs=None):
        self.epochs_done = epoch + 1
        accuracy = float(logs["val_accuracy"])
        stamped = {**self.metadata, "epoch": epoch + 1, "val_accuracy": accuracy}
        if accuracy > self.best_accuracy:
            self.best_accuracy, self.best_epoch = accuracy, epoch + 1
            save_model(self.model, self.best, stamped)
        save_model(self.model, self.last, stamped)


def model_metadata(ds: Dataset, model_params: ModelParams, params: TrainParams) -> dict:
    """What a model file must carry to be used alone: its classes, how to prepare images, provenance."""
    # The chosen model's settings only: another model's section in params.yaml is no part of this model.
    settings = {"model": model_params.chosen(), "train": params.model_dump()}
    return {
        "class_names": ds.class_names,
        "preprocessing": {k: ds.meta[k] for k in ("size", "mode", "roi_crop", "channels")},
        "source": ds.meta["source"],
        "data_md5": ds.meta["inputs_md5"],
        **settings,
        "params_md5": hashlib.md5(json.dumps(settings, sort_keys=True).encode()).hexdigest(),
    }


# Settings that may differ between an interrupted run and the one that resumes it.
RESUMABLE_CHANGES = {"epochs", "resume", "tensorboard"}


class TrainState:
    """What a run leaves for `train.resume`, in a folder DVC does not manage: the best and last
    checkpoints and dvclive's own log (wall times included). DVC deletes a stage's outputs before it
    runs, so the published outputs cannot hold it; they are copied from here once training ends."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.best, self.last, self.live = self.folder / "best.keras", self.folder / "last.keras", self.folder / "live"

    def clear(self) -> None:
        for path in (self.best, self.last):
            path.unlink(missing_ok=True)
        shutil.rmtree(self.live, ignore_errors=True)


def _resume_point(state: TrainState, metadata: dict) -> tuple[keras.Model, int, float, int] | None:
    """(model, completed epochs, best val accuracy, its epoch) from the last checkpoint, if compatible."""
    last, best = state.last, state.best
    if not last.exists():
        log.info("train.resume: no %s yet; starting from scratch", last)
        return None
    saved = read_model_metadata(last)

    def key(meta):
        train = {k: v for k, v in meta["train"].items() if k not in RESUMABLE_CHANGES}
        return meta["model"], train, meta["data_md5"], meta["preprocessing"]

    try:
        same = key(saved) == key(metadata)
        done = int(saved["epoch"])
    except (KeyError, TypeError, ValueError, AttributeError):
        raise PipelineError(
            f"train.resume: {last} lacks this pipeline's training metadata; set train.resume: false to start afresh"
        ) from None
    if not same:
        raise PipelineError(
            f"train.resume: {last} was trained with other settings or data; set train.resume: false to start afresh"
        )
    if done > metadata["train"]["epochs"]:  # Keras would train nothing, and dvc.lock record the smaller number
        raise PipelineError(
            f"train.resume: {last} has trained {done} epochs, more than train.epochs "
            f"({metadata['train']['epochs']}); set train.epochs to {done} or more, or train.resume: false"
        )
    best_meta = read_model_metadata(best) if best.exists() else saved
    log.info("resuming from %s after epoch %d", last, done)
    return load_model(last), done, best_meta["val_accuracy"], best_meta["epoch"]


def _rewind_live(live_dir: Path, epochs_done: int) -> None:
    """Cut dvclive's logs back to the checkpoint a run resumes from.

    A kill can leave a half-written last line in a step log, or an empty metrics.json (dvclive rewrites
    it in place), which dvclive's own resume cannot read. Steps are epochs, so keep steps < epochs_done.
    """
    for tsv in step_logs(live_dir).rglob("*.tsv"):
        lines = tsv.read_text().split("\n")[:-1]  # the last item is "" or a line cut short
        if not lines:
            tsv.unlink()
            continue
        header, *rows = lines
        kept = [row for row in rows if int(row.split("\t", 1)[0]) < epochs_done]
        write_text(tsv, "\n".join([header, *kept]) + "\n")
    summary = live_dir / "metrics.json"
    try:
        json.loads(summary.read_text())
    except FileNotFoundError:
        pass
    except ValueError:
        summary.unlink()  # rebuilt at the next step from the metrics logged then


def _optimizer(params: TrainParams, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    rate = params.learning_rate
    if params.lr_schedule == "cosine":
        rate = keras.optimizers.schedules.CosineDecay(rate, decay_steps=params.epochs * steps_per_epoch)
    if params.optimizer == "sgd":
        return keras.optimizers.SGD(learning_rate=rate, momentum=params.momentum, nesterov=True)
    return keras.optimizers.Adam(learning_rate=rate)


# x86 flags (Linux /proc/cpuinfo) of the instructions oneDNN computes bfloat16 with: without them it is emulated
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


def precision_policy(params: TrainParams, cpuinfo: str | None = None) -> str:
    """float16 on a GPU; bfloat16 on a CPU only where it is native (`cpuinfo`: /proc/cpuinfo's text).

    Elsewhere (older x86, ARM, no /proc) bfloat16 is emulated, usually slower than float32: it stays float32.
    """
    if not params.mixed_precision:
        return "float32"
    if tf.config.list_physical_devices("GPU"):
        return "mixed_float16"
    if cpu_flags(cpuinfo) & NATIVE_BF16_FLAGS:
        return "mixed_bfloat16"
    log.warning("train.mixed_precision: this CPU has no native bfloat16 (avx512_bf16 or amx_bf16); training in float32")
    return "float32"


def distribution_strategy(params: TrainParams) -> tf.distribute.Strategy:
    """MirroredStrategy (one replica per GPU, gradients all-reduced) when several GPUs are visible."""
    gpus = tf.config.list_logical_devices("GPU")
    if params.distribute == "auto" and len(gpus) > 1:
        log.info("train.distribute: mirroring over %d GPUs", len(gpus))
        return tf.distribute.MirroredStrategy([gpu.name for gpu in gpus])
    return tf.distribute.get_strategy()


def steps_per_epoch(ds: Dataset, params: TrainParams) -> int:
    return -(-len(ds.y["train"]) // params.batch_size)


def _new_model(ds: Dataset, model_params: ModelParams, params: TrainParams) -> keras.Model:
    if params.jit_compile and not tf.config.list_physical_devices("GPU"):
        log.warning("train.jit_compile without a GPU: XLA trained v1 and v2 3-6x slower on CPU (make bench)")
    policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy(precision_policy(params))
    try:
        model = build_model(model_params, ds.input_shape, ds.num_classes)
    finally:
        keras.config.set_dtype_policy(policy)  # only this model is mixed, not the next one built in-process
    # Label smoothing needs one-hot targets (the sparse loss has no such option): see _targets.
    loss = (
        keras.losses.CategoricalCrossentropy(label_smoothing=params.label_smoothing)
        if params.label_smoothing
        else "sparse_categorical_crossentropy"
    )
    model.compile(
        optimizer=_optimizer(params, steps_per_epoch(ds, params)),
        loss=loss,
        metrics=["accuracy"],
        jit_compile=params.jit_compile,
    )
    return model


def _callbacks(
    params: TrainParams, checkpoints: Checkpoints, logger: EpochLogger, progress: Progress, tensorboard_dir: Path
) -> list[keras.callbacks.Callback]:
    # Checkpoints first: an epoch is logged only once its model is safely on disk.
    callbacks = [checkpoints, LearningRateLogger(logger.live), logger, progress]
    if params.lr_schedule == "plateau":
        callbacks.append(
            keras.callbacks.ReduceLROnPlateau(
                monitor="val_accuracy", mode="max", factor=0.5, patience=2, min_lr=params.learning_rate / 100
            )
        )
    if params.early_stopping:
        callbacks.append(
            keras.callbacks.EarlyStopping(monitor="val_accuracy", mode="max", patience=params.early_stopping)
        )
    if params.tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(tensorboard_dir)))
    return callbacks


def tensorboard_run(tensorboard_dir: Path, metadata: dict) -> Path:
    """One TensorBoard run per experiment, so two runs never show as one: named as DVC named the experiment
    (`dvc exp run` sets DVC_EXP_NAME), else by the model and training settings' hash."""
    return Path(tensorboard_dir) / (os.environ.get("DVC_EXP_NAME") or metadata["params_md5"][:8])


def _targets(y: np.ndarray, num_classes: int, params: TrainParams) -> np.ndarray:
    return np.eye(num_classes, dtype=np.float32)[y] if params.label_smoothing else y


def fit_batches(ds: Dataset, params: TrainParams, augment: AugmentParams) -> tuple[tf.data.Dataset, tf.data.Dataset]:
    """What `fit` trains on: the training batches (shuffled with train.seed, augmented on the fly with
    train.online_augment) and the validation batches, targets as the loss wants them."""
    augmenter = online_augmenter(augment, params.seed) if params.online_augment else None
    train = as_batches(
        ds.x["train"],
        _targets(ds.y["train"], ds.num_classes, params),
        params.batch_size,
        shuffle_seed=params.seed,
        augmenter=augmenter,
    )
    return train, as_batches(ds.x["val"], _targets(ds.y["val"], ds.num_classes, params), params.batch_size)


def _disk_full_is_one_line(fit: Callable[..., dict]) -> Callable[..., dict]:
    """ENOSPC while dvclive or TensorBoard write their logs, or Keras a checkpoint, is one line, not a traceback."""

    @functools.wraps(fit)
    def guarded(*args, **kwargs) -> dict:
        try:
            return fit(*args, **kwargs)
        except (OSError, tf.errors.ResourceExhaustedError) as exc:  # TensorBoard's writer raises the latter
            if not (is_disk_full(exc) or "No space left on device" in str(exc)):
                raise
            raise PipelineError(
                "no space left on device while training (writing the training logs or a checkpoint); free some "
                "space and run again (train.resume: true continues from the last epoch saved)"
            ) from None

    return guarded


@_disk_full_is_one_line
def train(
    ds: Dataset,
    model_params: ModelParams,
    params: TrainParams,
    best: Path,
    last: Path,
    live_dir: Path,
    tensorboard_dir: Path,
    augment: AugmentParams,
    checkpoint_dir: Path,
    timings: Path,
) -> dict:
    """Fit on train, select on val (never test); returns a summary of the run.

    Checkpoints and dvclive's log go to `checkpoint_dir` as training runs; at the end `best`, `last` and
    `live_dir` (dvclive's summary and step logs, without the wall-clock figures) are published from there,
    and the wall-clock figures go to `timings`, so every other output is the same bytes for the same inputs.
    With `params.resume`, training continues from the last checkpoint (weights and optimizer state) and
    dvclive continues the same step numbering (one step per epoch). With `params.tensorboard`, TensorBoard's
    logs go to this run's own folder under `tensorboard_dir` (tensorboard_run).
    """
    live_dir = Path(live_dir)
    state = TrainState(checkpoint_dir)
    make_deterministic(params.seed, params.jit_compile)
    log.info("devices: %s", ", ".join(d.name for d in tf.config.list_logical_devices()))
    metadata = model_metadata(ds, model_params, params)
    with distribution_strategy(params).scope():
        resumed = _resume_point(state, metadata) if params.resume else None
        model, initial_epoch, best_accuracy, best_epoch = resumed or (_new_model(ds, model_params, params), 0, -1.0, 0)
    checkpoints = Checkpoints(state.best, state.last, metadata, best_accuracy, best_epoch)
    tensorboard_dir = tensorboard_run(tensorboard_dir, metadata)
    if resumed:
        _rewind_live(state.live, initial_epoch)
    else:
        state.clear()
        if params.tensorboard:  # a re-run of the same experiment replaces its logs
            shutil.rmtree(tensorboard_dir, ignore_errors=True)
    live = Live(dir=str(state.live), dvcyaml=None, save_dvc_exp=False, resume=resumed is not None)
    live.step = initial_epoch
    train_batches, val_batches = fit_batches(ds, params, augment)
    started = time.perf_counter()
    progress = Progress(params.epochs, steps_per_epoch(ds, params), initial_epoch)
    model.fit(
        train_batches,
        validation_data=val_batches,
        epochs=params.epochs,
        initial_epoch=initial_epoch,
        callbacks=_callbacks(params, checkpoints, EpochLogger(live, len(ds.y["train"])), progress, tensorboard_dir),
        shuffle=False,  # the tf.data pipeline shuffles, seeded
        verbose=0,  # Progress reports instead
    )
    summary = {
        "best_epoch": checkpoints.best_epoch,
        "best_val_accuracy": checkpoints.best_accuracy,
        "epochs_done": checkpoints.epochs_done,  # fewer than train.epochs after early stopping
        "train_seconds": round(time.perf_counter() - started, 1),
        "parameters": model.count_params(),
    }
    live.summary.update(summary)
    live.end()
    publish(state, best, last, live_dir, timings)
    return summary


def publish(state: TrainState, best: Path, last: Path, live_dir: Path, timings: Path) -> None:
    """Copy the checkpoints and dvclive's log to the stage's outputs, the wall-clock figures apart.

    `live_dir` gets dvclive's `metrics.json` and step logs less every timing; `timings` gets them all:
    the run's training seconds, the last epoch's seconds and images/s, both per epoch, and the host.
    """
    for source, target in ((state.best, best), (state.last, last)):
        with atomic_path(target, suffix=target.suffix) as tmp:
            shutil.copyfile(source, tmp)
    summary = json.loads((state.live / "metrics.json").read_text())
    figures = {"train_seconds": summary.pop("train_seconds", None)}
    figures.update((name, summary.pop(name, None)) for name in TIMING_LOGS)
    per_epoch = {}
    with atomic_path(live_dir) as tmp:
        tmp.unlink()  # atomic_path made a placeholder file; the folder replaces it
        tmp.mkdir()
        (tmp / "metrics.json").write_text(json.dumps(summary, indent=4))
        source = step_logs(state.live)
        for tsv in sorted(source.rglob("*.tsv")):
            relative = tsv.relative_to(source)
            if relative.with_suffix("").as_posix() in TIMING_LOGS:
                rows = [row.split("\t") for row in tsv.read_text().splitlines()[1:]]
                per_epoch[relative.stem] = [float(value) for _, value in rows]
                continue
            (step_logs(tmp) / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(tsv, step_logs(tmp) / relative)
    figures["per_epoch"] = per_epoch
    # Where the figures were measured; also which CPU kind the float results are bit-identical on.
    figures["host"] = {"cpu": cpu_kind(), "cores": os.cpu_count()}
    write_text(timings, json.dumps(figures, indent=4) + "\n")
