"""Model zoo. Each builder reads like the diagram; input shape and class count come from the data.

The widths come from params.yaml, where each model has its own section (`model.<name>`): `filters` is
the first convolution's width (later stages have 2x and 4x as many), `dense` the hidden dense width and
`dropout` the dropout before the classifier, each only where the model has one. So
`-S model.name=mnist_cnn` alone gives the course's small CNN with its own widths, and
`-S model.v1.filters=32` narrows v1 only.
"""

from __future__ import annotations

import json
import logging
import re
import stat
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import keras
from keras import layers

from trafficsigns.core.config import ModelParams
from trafficsigns.core.errors import PipelineError
from trafficsigns.core.fsutil import atomic_path
from trafficsigns.core.zipcheck import ZipLimits, check_zip, read_member

log = logging.getLogger(__name__)


def classifier(num_classes: int) -> layers.Dense:
    """The softmax head, kept float32 so mixed precision cannot overflow the probabilities."""
    return layers.Dense(num_classes, activation="softmax", dtype="float32")


def dense_head(dense: int, dropout: float, num_classes: int) -> list[layers.Layer]:
    """Flatten-Dense-Drop-Softmax: the classifier of FIDLE's v1 family and v2."""
    return [layers.Flatten(), layers.Dense(dense, activation="relu"), layers.Dropout(dropout), classifier(num_classes)]


def two_conv_net(
    input_shape, num_classes: int, filters: int, dense: int, dropout: float, conv_dropout: float, name: str
) -> keras.Model:
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
            *dense_head(dense, dropout, num_classes),
        ],
        name=name,
    )


def vgg_net(
    input_shape, num_classes: int, filters: int, dense: int, dropout: float, conv_dropout: float, name: str
) -> keras.Model:
    """FIDLE's v2: three blocks of Conv(same)-Conv(valid)-Pool-Drop at f, 2f, 4f, then Dense-Drop-Softmax."""
    blocks = []
    for width in (filters, 2 * filters, 4 * filters):
        blocks += [
            layers.Conv2D(width, (3, 3), padding="same", activation="relu"),
            layers.Conv2D(width, (3, 3), activation="relu"),
            layers.MaxPooling2D(pool_size=(2, 2)),
            layers.Dropout(conv_dropout),
        ]
    return keras.Sequential(
        [
            keras.Input(shape=input_shape),
            *blocks,
            *dense_head(dense, dropout, num_classes),
        ],
        name=name,
    )


def batchnorm_net(
    input_shape, num_classes: int, filters: int, dense: int, dropout: float, conv_dropout: float, name: str
) -> keras.Model:
    """FIDLE GTSRB5's v3: 5x5 convolutions f | 2f, 4f, each followed by batch norm, then Dense-BN-Drop."""
    return keras.Sequential(
        [
            keras.Input(shape=input_shape),
            layers.Conv2D(filters, (5, 5), padding="same", activation="relu"),
            layers.BatchNormalization(),
            layers.MaxPooling2D(pool_size=(2, 2)),
            layers.Dropout(conv_dropout),
            layers.Conv2D(2 * filters, (5, 5), padding="same", activation="relu"),
            layers.BatchNormalization(),
            layers.Conv2D(4 * filters, (5, 5), padding="same", activation="relu"),
            layers.BatchNormalization(),
            layers.MaxPooling2D(pool_size=(2, 2)),
            layers.Dropout(conv_dropout),
            layers.Flatten(),
            layers.Dense(dense, activation="relu"),
            layers.BatchNormalization(),
            layers.Dropout(dropout),
            classifier(num_classes),
        ],
        name=name,
    )


def _conv_bn_relu(x, width: int):
    x = layers.Conv2D(width, (3, 3), padding="same", use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    return layers.ReLU()(x)


def residual_net(
    input_shape, num_classes: int, filters: int, dropout: float, conv_dropout: float, name: str
) -> keras.Model:
    """Ours: three stages of Conv-BN-ReLU plus a residual Conv-BN-ReLU pair at f, 2f, 4f, global pooling.

    Global average pooling replaces v1/v2's big dense layer (most of their weights), so the model is
    small, trains fast on a CPU and takes any input size from 8 px up.
    """
    inputs = keras.Input(shape=input_shape)
    x = inputs
    for stage, width in enumerate((filters, 2 * filters, 4 * filters)):
        if stage:
            x = layers.MaxPooling2D(pool_size=(2, 2), padding="same")(x)
        x = _conv_bn_relu(x, width)
        x = layers.Add()([x, _conv_bn_relu(_conv_bn_relu(x, width), width)])
        x = layers.Dropout(conv_dropout)(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(dropout)(x)
    return keras.Model(inputs, classifier(num_classes)(x), name=name)


def dense_net(input_shape, num_classes: int, dense: int, conv_dropout: float, name: str) -> keras.Model:
    """Flatten-Dense-Dense-Softmax, FIDLE's MNIST DNN (no convolution, no dropout: the baseline).

    `conv_dropout` is taken and unused: there is no conv block to follow."""
    return keras.Sequential(
        [
            keras.Input(shape=input_shape),
            layers.Flatten(),
            layers.Dense(dense, activation="relu"),
            layers.Dense(dense, activation="relu"),
            classifier(num_classes),
        ],
        name=name,
    )


@dataclass(frozen=True)
class Architecture:
    """Which builder a `model.name` maps to, and what it is; its widths are in params.yaml's `model.<name>`."""

    build: Callable[..., keras.Model]
    about: str


ARCHITECTURES: dict[str, Architecture] = {
    "v1": Architecture(two_conv_net, about="FIDLE GTSRB v1: Conv-Pool-Conv-Pool-Dense"),
    "v2": Architecture(vgg_net, about="FIDLE GTSRB v2: three blocks of 2xConv-Pool, Dense"),
    "v3": Architecture(batchnorm_net, about="FIDLE GTSRB5 v3: three 5x5 convolutions with batch norm, Dense"),
    "resnet": Architecture(residual_net, about="ours: 3 residual stages, batch norm, global pooling"),
    "mnist_cnn": Architecture(two_conv_net, about="FIDLE MNIST CNN: Conv-Pool-Conv-Pool-Dense"),
    "dnn": Architecture(dense_net, about="FIDLE MNIST DNN: Dense-Dense (no conv)"),
}


def describe(params: ModelParams) -> str:
    """The chosen model in words, with its widths: `FIDLE GTSRB v1: ... (filters 96, dense 1500, dropout 0.5)`."""
    arch = ARCHITECTURES[params.name]
    return f"{arch.about} ({', '.join(f'{k} {v}' for k, v in params.widths().items())})"


def build_model(params: ModelParams, input_shape, num_classes: int) -> keras.Model:
    try:
        arch = ARCHITECTURES[params.name]
    except KeyError:
        raise PipelineError(f"model.name {params.name!r} is unknown; allowed: {', '.join(ARCHITECTURES)}") from None
    try:
        model = arch.build(
            input_shape, num_classes, **params.widths(), conv_dropout=params.conv_dropout, name=params.name
        )
    except ValueError as exc:  # e.g. valid convolutions and poolings shrink a small image to nothing
        raise PipelineError(
            f"model {params.name} cannot take {tuple(input_shape)} images ({keras_reason(exc)}); "
            "use a larger prepare.image_size or another model.name"
        ) from None
    # One line, not Keras' layer table (100+ lines for the ResNet): the layers are in the model file.
    log.info(
        "model %s (%s): %s weights, input %s, %d classes",
        params.name,
        describe(params),
        f"{model.count_params():,}",
        tuple(input_shape),
        num_classes,
    )
    return model


def keras_reason(exc: BaseException) -> str:
    """The one line of a Keras exception that says what is wrong, without its colour codes, the layer's call
    arguments and the tensors (8 lines for a too-small input)."""
    lines = [line.strip() for line in re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).splitlines()]
    noise = ("Exception encountered", "Arguments received", "•", "args=", "kwargs=")
    reason = [line for line in lines if line and not line.startswith(noise)]
    return reason[0] if reason else type(exc).__name__


METADATA_MEMBER = "trafficsigns.json"


# Every member's timestamp, and Keras' `date_saved`: the zip format's earliest date, as reproducible builds use.
FIXED_DATE_TIME = (1980, 1, 1, 0, 0, 0)
FIXED_DATE_SAVED = "1980-01-01@00:00:00"


def save_model(model: keras.Model, path: Path, metadata: dict) -> None:
    """Save a `.keras` file that also carries `metadata` (class names, preprocessing, provenance).

    The metadata rides as one extra JSON member of the `.keras` zip, which Keras ignores on load, so
    the model file alone is enough to preprocess new images the way `prepare` did. The file is the same
    bytes for the same model: see `_reproducible`.
    """
    with atomic_path(path, suffix=".keras") as tmp:
        model.save(tmp)
        _reproducible(tmp, {METADATA_MEMBER: json.dumps(metadata, indent=2).encode()})


def _reproducible(path: Path, extra: dict[str, bytes]) -> None:
    """Rewrite Keras' zip (plus `extra` members) without what varies from one save of a model to the next.

    Keras stamps each member with the time of writing, puts `date_saved` in `metadata.json`, and numbers
    shared objects in `config.json` by their Python `id()`, a memory address. Here the stamps and the date
    are fixed and the ids renumbered 1, 2, ... in order of appearance (the same sharing, so the same model
    on load). The weights file (HDF5) holds no time (checked: two saves give the same bytes).
    """
    with zipfile.ZipFile(path) as zf:
        members = [(info, zf.read(info)) for info in zf.infolist()]
    with zipfile.ZipFile(path, "w") as zf:
        for info, data in [*members, *((zipfile.ZipInfo(name), data) for name, data in extra.items())]:
            if info.filename == "metadata.json":
                data = json.dumps({**json.loads(data), "date_saved": FIXED_DATE_SAVED}).encode()
            elif info.filename == "config.json":
                data = _renumber_shared_objects(data.decode()).encode()
            fixed = zipfile.ZipInfo(info.filename, date_time=FIXED_DATE_TIME)
            fixed.compress_type, fixed.external_attr = info.compress_type, 0o644 << 16
            zf.writestr(fixed, data)


def _renumber_shared_objects(config: str) -> str:
    numbers: dict[str, int] = {}
    return re.sub(
        r'("shared_object_id": )(\d+)', lambda m: f"{m[1]}{numbers.setdefault(m[2], len(numbers) + 1)}", config
    )


# A `.keras` file: config.json, metadata.json, model.weights.h5 (v1 with Adam's state is ~130 MB) and ours.
MODEL_LIMITS = ZipLimits(members=64, total=8 << 30, member=4 << 30, ratio=200)
MAX_METADATA_BYTES = 4 << 20  # class names and settings: a few KB
MAX_JSON_BYTES = 64 << 20  # Keras' config.json: the layers, a few KB to a few hundred


def _open_model_zip(path: Path) -> zipfile.ZipFile:
    """The model file's zip, vetted (`check_zip`): a missing path, a folder, a FIFO or device (which would
    block or never end), a non-zip or a hostile zip is one PipelineError naming it."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise PipelineError(f"{path}: model not found (run the train stage first)") from None
    except OSError as exc:
        raise PipelineError(f"{path}: cannot read the model ({exc.strerror or exc})") from None
    if stat.S_ISDIR(mode):
        raise PipelineError(f"{path}: is a folder, not a model file (a .keras file, e.g. models/best.keras)")
    if not stat.S_ISREG(mode):
        raise PipelineError(f"{path}: not a regular file (a FIFO, socket or device?); a model is a .keras file")
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise PipelineError(f"{path}: not a model file (not a readable zip: {exc})") from None
    try:
        check_zip(zf, path, MODEL_LIMITS)
        for info in zf.infolist():  # Keras reads config.json and metadata.json whole
            if info.filename.endswith(".json") and info.file_size > MAX_JSON_BYTES:
                raise PipelineError(
                    f"{path}: member {info.filename!r} declares {info.file_size} bytes, over the limit of "
                    f"{MAX_JSON_BYTES} for a model's JSON"
                )
    except PipelineError:
        zf.close()
        raise
    return zf


def read_model_metadata(path: Path) -> dict:
    """The metadata `save_model` put in the model file, read without loading the model."""
    with _open_model_zip(path) as zf:
        try:
            info = zf.getinfo(METADATA_MEMBER)
        except KeyError:
            raise PipelineError(f"{path}: not a model saved by this pipeline (no {METADATA_MEMBER} inside)") from None
        if info.file_size > MAX_METADATA_BYTES:
            raise PipelineError(
                f"{path}: its {METADATA_MEMBER} declares {info.file_size} bytes, over the limit of "
                f"{MAX_METADATA_BYTES}; not a model saved by this pipeline"
            )
        data = read_member(zf, METADATA_MEMBER)
    try:
        metadata = json.loads(data)
    except (ValueError, RecursionError):  # not UTF-8, not JSON, or nested deeper than Python recurses
        raise PipelineError(f"{path}: its {METADATA_MEMBER} is not valid JSON") from None
    if not isinstance(metadata, dict):
        raise PipelineError(f"{path}: its {METADATA_MEMBER} is not a JSON object")
    return metadata


def load_model(path: Path) -> keras.Model:
    """Load a `.keras` file in safe mode: a file from elsewhere cannot run arbitrary code."""
    _open_model_zip(path).close()  # what it is, and its declared sizes, before Keras reads a byte
    try:
        return keras.models.load_model(path, safe_mode=True)
    except Exception as exc:  # Keras lets through whatever a damaged file makes it trip over
        raise PipelineError(f"{path}: cannot load model ({type(exc).__name__}: {keras_reason(exc)})") from None
