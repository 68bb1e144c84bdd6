"""Training loop: seeded and deterministic, tf.data input, dvclive logging, atomic checkpoints."""
from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from dvclive import Live

from trafficsigns.config import ModelParams, TrainParams
from trafficsigns.h5store import Dataset
from trafficsigns.errors import PipelineError
from trafficsigns.models import build_model, load_model, read_model_metadata, save_model

log = logging.getLogger(__name__)


def make_deterministic(seed: int) -> None:
    """Same seed + same data + same host kind -> same weights, bit for bit (CPU)."""
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def as_batches(x: np.ndarray, y: np.ndarray, batch_size: int, shuffle_seed: int | None = None) -> tf.data.Dataset:
    ds = tf.data.Dataset.from_tensor_slices((x, y))
    if shuffle_seed is not None:
        ds = ds.shuffle(len(x), seed=shuffle_seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


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


class Checkpoints(keras.callbacks.Callback):
    """Keeps the model of the best val accuracy and the last one, each written atomically.

    Metadata `epoch` counts completed epochs, so a resumed run starts at that epoch.
    """

    def __init__(self, best: Path, last: Path, metadata: dict, best_accuracy: float = -1.0, best_epoch: int = 0):
        super().__init__()
        self.best, self.last, self.metadata = best, last, metadata
        self.best_accuracy, self.best_epoch = best_accuracy, best_epoch

    def on_epoch_end(self, epoch, logs=None):
        accuracy = float(logs["val_accuracy"])
        stamped = {**self.metadata, "epoch": epoch + 1, "val_accuracy": accuracy}
        if accuracy > self.best_accuracy:
            self.best_accuracy, self.best_epoch = accuracy, epoch + 1
            save_model(self.model, self.best, stamped)
        save_model(self.model, self.last, stamped)


def model_metadata(ds: Dataset, model_params: ModelParams, params: TrainParams) -> dict:
    """What a model file must carry to be used alone: its classes, how to prepare images, provenance."""
    settings = {"model": model_params.model_dump(), "train": params.model_dump()}
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


def _resume_point(last: Path, best: Path, metadata: dict) -> tuple[keras.Model, int, float, int] | None:
    """(model, completed epochs, best val accuracy, its epoch) from the last checkpoint, if compatible."""
    if not last.exists():
        log.info("train.resume: no %s yet; starting from scratch", last)
        return None
    saved = read_model_metadata(last)

    def key(meta):
        train = {k: v for k, v in meta["train"].items() if k not in RESUMABLE_CHANGES}
        return meta["model"], train, meta["data_md5"], meta["preprocessing"]

    if key(saved) != key(metadata):
        raise PipelineError(f"train.resume: {last} was trained with other settings or data; "
                            "set train.resume: false to start afresh")
    best_meta = read_model_metadata(best) if best.exists() else saved
    log.info("resuming from %s after epoch %d", last, saved["epoch"])
    return load_model(last), saved["epoch"], best_meta["val_accuracy"], best_meta["epoch"]


def _new_model(ds: Dataset, model_params: ModelParams, params: TrainParams) -> keras.Model:
    model = build_model(model_params, ds.input_shape, ds.num_classes)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=params.learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def train(ds: Dataset, model_params: ModelParams, params: TrainParams, best: Path, last: Path, live_dir: Path,
          tensorboard_dir: Path) -> dict:
    """Fit on train, select on val (never test); returns a summary of the run.

    With `params.resume`, training continues from `last` (weights and optimizer state) and dvclive
    continues the same step numbering (one step per epoch).
    """
    make_deterministic(params.seed)
    log.info("devices: %s", ", ".join(d.name for d in tf.config.list_logical_devices()))
    metadata = model_metadata(ds, model_params, params)
    resumed = _resume_point(last, best, metadata) if params.resume else None
    model, initial_epoch, best_accuracy, best_epoch = resumed or (_new_model(ds, model_params, params), 0, -1.0, 0)
    model.summary(print_fn=log.info)
    checkpoints = Checkpoints(best, last, metadata, best_accuracy, best_epoch)
    live = Live(dir=str(live_dir), dvcyaml=None, save_dvc_exp=False, resume=resumed is not None)
    live.step = initial_epoch
    # Checkpoints first: an epoch is logged only once its model is safely on disk.
    callbacks = [checkpoints, EpochLogger(live, len(ds.y["train"]))]
    if params.tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(tensorboard_dir)))
    started = time.perf_counter()
    model.fit(
        as_batches(ds.x["train"], ds.y["train"], params.batch_size, shuffle_seed=params.seed),
        validation_data=as_batches(ds.x["val"], ds.y["val"], params.batch_size),
        epochs=params.epochs,
        initial_epoch=initial_epoch,
        callbacks=callbacks,
        shuffle=False,  # the tf.data pipeline shuffles, seeded
        verbose=2,
    )
    summary = {
        "best_epoch": checkpoints.best_epoch,
        "best_val_accuracy": checkpoints.best_accuracy,
        "train_seconds": round(time.perf_counter() - started, 1),
        "parameters": model.count_params(),
    }
    live.summary.update(summary)
    live.end()
    return summary
