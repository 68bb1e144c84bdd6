"""Training progress on the console: one line per epoch, and on a terminal a bar over the run's batches
with its ETA (Keras' own per-epoch line is off: `fit(verbose=0)`)."""

from __future__ import annotations

import contextlib
import logging
import sys
import time

import keras
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

log = logging.getLogger(__name__)


def current_learning_rate(model: keras.Model) -> float:
    """The optimizer's rate now: a schedule's value at the current step, or the plateau callback's setting."""
    return float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))


class Progress(keras.callbacks.Callback):
    """Logs `epoch k/n: loss, accuracy, val_accuracy, lr, seconds` after each epoch; with `bar` (default: when
    stderr is a terminal) a tqdm bar over every batch left in the run shows the ETA, log lines printed above it."""

    def __init__(self, epochs: int, steps_per_epoch: int, initial_epoch: int = 0, bar: bool | None = None):
        super().__init__()
        self.epochs, self.steps_per_epoch, self.initial_epoch = epochs, steps_per_epoch, initial_epoch
        self.with_bar = sys.stderr.isatty() if bar is None else bar
        self.bar, self.context = None, contextlib.ExitStack()

    def on_train_begin(self, logs=None):
        if self.with_bar:
            self.context.enter_context(logging_redirect_tqdm())
            total = (self.epochs - self.initial_epoch) * self.steps_per_epoch
            self.bar = self.context.enter_context(tqdm(total=total, unit="batch", leave=False, dynamic_ncols=True))

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter()
        if self.bar is not None:
            self.bar.set_description(f"epoch {epoch + 1}/{self.epochs}")

    def on_train_batch_end(self, batch, logs=None):
        if self.bar is not None:
            self.bar.update()
            self.bar.set_postfix({k: f"{float(v):.4f}" for k, v in (logs or {}).items()}, refresh=False)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        log.info(
            "epoch %d/%d: loss %.4f, accuracy %.4f, val_accuracy %.4f, lr %.3g, %.1f s",
            epoch + 1,
            self.epochs,
            logs.get("loss", float("nan")),
            logs.get("accuracy", float("nan")),
            logs.get("val_accuracy", float("nan")),
            current_learning_rate(self.model),
            time.perf_counter() - self.started,
        )

    def on_train_end(self, logs=None):
        self.context.close()
