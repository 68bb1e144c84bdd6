"""Model zoo. Each builder reads like the diagram; input shape and class count come from the data.

`model.filters` is the first convolution's width (the second has twice as many) and `model.dense`
the hidden dense width; left null they take the architecture's own values, so
`-S model.name=mnist_cnn` alone gives the course's small CNN and `-S model.filters=32` narrows any model.
"""
from __future__ import annotations

import json
import logging
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import keras
from keras import layers

from trafficsigns.config import ModelParams
from trafficsigns.errors import PipelineError
from trafficsigns.fsutil import atomic_path

log = logging.getLogger(__name__)


def two_conv_net(input_shape, num_classes: int, filters: int, dense: int, dropout: float,
                 conv_dropout: float, name: str) -> keras.Model:
    """Conv(f)-Pool-Drop-Conv(2f)-Pool-Drop-Flatten-Dense-Drop-Softmax, FIDLE's v1 family."""
    return keras.Sequential(
        [
            keras.Input(shape=input_shape),
            layers.Conv2D(filters, kernel_size=(3, 3), activation="relu"),
            layers.MaxPooling2D(pool_size=(2, 2)),
            layers.Dropout(conv_dropout),
            layers.Conv2D(2 * filters, kernel_size=(3, 3), activation="relu"),
            layers.MaxPooling2D(pool_size=(2, 2)),
            layers.Dropout(conv_dropout),
            layers.Flatten(),
            layers.Dense(dense, activation="relu"),
            layers.Dropout(dropout),
            layers.Dense(num_classes, activation="softmax"),
        ],
        name=name,
    )


def dense_net(input_shape, num_classes: int, dense: int, name: str, **_) -> keras.Model:
    """Flatten-Dense-Dense-Softmax, FIDLE's MNIST DNN (no convolution, no dropout: the baseline)."""
    return keras.Sequential(
        [
            keras.Input(shape=input_shape),
            layers.Flatten(),
            layers.Dense(dense, activation="relu"),
            layers.Dense(dense, activation="relu"),
            layers.Dense(num_classes, activation="softmax"),
        ],
        name=name,
    )


@dataclass(frozen=True)
class Architecture:
    build: Callable[..., keras.Model]
    filters: int
    dense: int
    about: str


ARCHITECTURES: dict[str, Architecture] = {
    "v1": Architecture(two_conv_net, filters=96, dense=1500, about="FIDLE GTSRB v1: Conv96-Conv192-Dense1500"),
    "mnist_cnn": Architecture(two_conv_net, filters=8, dense=100, about="FIDLE MNIST CNN: Conv8-Conv16-Dense100"),
    "dnn": Architecture(dense_net, filters=0, dense=100, about="FIDLE MNIST DNN: Dense100-Dense100 (no conv)"),
}


def build_model(params: ModelParams, input_shape, num_classes: int) -> keras.Model:
    try:
        arch = ARCHITECTURES[params.name]
    except KeyError:
        raise PipelineError(f"model.name {params.name!r} is unknown; allowed: {', '.join(ARCHITECTURES)}") from None
    log.info("model %s (%s), input %s, %d classes", params.name, arch.about, tuple(input_shape), num_classes)
    return arch.build(
        input_shape, num_classes,
        filters=params.filters or arch.filters,
        dense=params.dense or arch.dense,
        dropout=params.dropout,
        conv_dropout=params.conv_dropout,
        name=params.name,
    )


METADATA_MEMBER = "trafficsigns.json"


def save_model(model: keras.Model, path: Path, metadata: dict) -> None:
    """Save a `.keras` file that also carries `metadata` (class names, preprocessing, provenance).

    The metadata rides as one extra JSON member of the `.keras` zip, which Keras ignores on load, so
    the model file alone is enough to preprocess new images the way `prepare` did.
    """
    with atomic_path(path, suffix=".keras") as tmp:
        model.save(tmp)
        with zipfile.ZipFile(tmp, "a") as zf:
            zf.writestr(METADATA_MEMBER, json.dumps(metadata, indent=2))


def read_model_metadata(path: Path) -> dict:
    try:
        with zipfile.ZipFile(path) as zf:
            return json.loads(zf.read(METADATA_MEMBER))
    except FileNotFoundError:
        raise PipelineError(f"{path}: model not found") from None
    except (KeyError, zipfile.BadZipFile, ValueError):
        raise PipelineError(f"{path}: not a model saved by this pipeline (no {METADATA_MEMBER} inside)") from None


def load_model(path: Path) -> keras.Model:
    """Load a `.keras` file in safe mode: a file from elsewhere cannot run arbitrary code."""
    if not Path(path).exists():
        raise PipelineError(f"{path}: model not found (run the train stage first)")
    try:
        return keras.models.load_model(path, safe_mode=True)
    except (ValueError, OSError) as exc:
        raise PipelineError(f"{path}: cannot load model ({exc})") from None
