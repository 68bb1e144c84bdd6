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
from trafficsigns.models import build_model, save_model

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
    """Keeps the model of the best val accuracy and the last one, each written atomically."""

    def __init__(self, best: Path, last: Path, metadata: dict):
        super().__init__()
        self.best, self.last, self.metadata = best, last, metadata
        self.best_accuracy, self.best_epoch = -1.0, -1

    def on_epoch_end(self, epoch, logs=None):
        accuracy = float(logs["val_accuracy"])
        if accuracy > self.best_accuracy:
            self.best_accuracy, self.best_epoch = accuracy, epoch
            save_model(self.model, self.best, {**self.metadata, "epoch": epoch + 1, "val_accuracy": accuracy})
        save_model(self.model, self.last, {**self.metadata, "epoch": epoch + 1, "val_accuracy": accuracy})


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


def train(ds: Dataset, model_params: ModelParams, params: TrainParams, best: Path, last: Path, live_dir: Path,
          tensorboard_dir: Path) -> dict:
    """Fit on train, select on val (never test); returns a summary of the run."""
    make_deterministic(params.seed)
    log.info("devices: %s", ", ".join(d.name for d in tf.config.list_logical_devices()))
    model = build_model(model_params, ds.input_shape, ds.num_classes)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=params.learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    model.summary(print_fn=log.info)
    checkpoints = Checkpoints(best, last, model_metadata(ds, model_params, params))
    live = Live(dir=str(live_dir), dvcyaml=None, save_dvc_exp=False)
    callbacks = [EpochLogger(live, len(ds.y["train"])), checkpoints]
    if params.tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(tensorboard_dir)))
    started = time.perf_counter()
    model.fit(
        as_batches(ds.x["train"], ds.y["train"], params.batch_size, shuffle_seed=params.seed),
        validation_data=as_batches(ds.x["val"], ds.y["val"], params.batch_size),
        epochs=params.epochs,
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
