"""From raw archives to the prepared `Dataset`: parse, split train/val by track, prepare images."""

from __future__ import annotations

import logging
import math
import zipfile
from pathlib import Path

import numpy as np

from trafficsigns.core.config import PrepareParams
from trafficsigns.core.errors import PipelineError
from trafficsigns.core.fsutil import check_regular_file, md5sum
from trafficsigns.core.zipcheck import READ_ERRORS, ZipLimits, check_zip
from trafficsigns.data.archives import Split, read_test_split, read_train_split
from trafficsigns.data.classes import GTSRB_CLASS_NAMES
from trafficsigns.data.h5store import Dataset, expected_meta
from trafficsigns.data.images import prepare_split
from trafficsigns.data.sources import GTSRB_FORMAT, MNIST_FILE, MNIST_FORMAT, SOURCES, TRAIN_ZIP

log = logging.getLogger(__name__)


def split_by_track(tracks: np.ndarray, labels: np.ndarray, val_fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of validation images: whole tracks, `val_fraction` of each class's tracks.

    A track is ~30 photos of one physical sign; splitting images instead of tracks would put near
    copies of a validation image in the training set and overstate validation accuracy.
    """
    rng = np.random.default_rng(seed)
    val = np.zeros(len(tracks), dtype=bool)
    for cid in np.unique(labels):
        class_tracks = np.unique(tracks[labels == cid])
        if len(class_tracks) < 2:
            continue  # a single track cannot be split; it stays in train
        n_val = min(len(class_tracks) - 1, max(1, round(val_fraction * len(class_tracks))))
        val |= np.isin(tracks, rng.choice(class_tracks, size=n_val, replace=False))
    return val


def _prepare(split: Split, params: PrepareParams, desc: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Images of a split, the mask of those kept, and one line per skipped image."""
    x, failed = prepare_split(
        split,
        size=params.size,
        mode=params.mode,
        roi_crop=params.roi_crop,
        desc=desc,
        skip_bad=params.on_bad_image == "skip",
    )
    keep = np.ones(len(split), dtype=bool)
    keep[list(failed)] = False
    for reason in failed.values():
        log.warning("skipped: %s", reason)
    return x, keep, list(failed.values())


def build_gtsrb(raw_dir: Path, params: PrepareParams, source: str) -> tuple[Dataset, np.ndarray]:
    """The prepared dataset, and the raw (width, height) of every image for the size histogram."""
    train, test = read_train_split(raw_dir), read_test_split(raw_dir)
    val = split_by_track(train.tracks, train.labels, params.val_fraction, params.seed)
    if not val.any():
        raise PipelineError(f"{raw_dir / TRAIN_ZIP}: no class has two tracks, so no validation split can be made")
    x_train_all, keep_train, skipped_train = _prepare(train, params, "prepare train")
    x_test, keep_test, skipped_test = _prepare(test, params, "prepare test")
    is_train, is_val = ~val & keep_train, val & keep_train
    ds = Dataset(
        x={"train": x_train_all[is_train], "val": x_train_all[is_val], "test": x_test[keep_test]},
        y={"train": train.labels[is_train], "val": train.labels[is_val], "test": test.labels[keep_test]},
        class_names=list(GTSRB_CLASS_NAMES),
        tracks={"train": train.tracks[is_train], "val": train.tracks[is_val]},
        meta={
            **expected_meta(source, params),
            "channels": int(x_train_all.shape[-1]),
            "num_classes": len(GTSRB_CLASS_NAMES),
            "counts": {"train": int(is_train.sum()), "val": int(is_val.sum()), "test": int(keep_test.sum())},
            "skipped_images": skipped_train + skipped_test,
            "inputs_md5": inputs_md5(raw_dir, source),
        },
    )
    return ds, np.concatenate([train.sizes, test.sizes])


def inputs_md5(raw_dir: Path, source: str) -> dict[str, str]:
    """The md5 of each of the source's raw files: which data a dataset (and so a model) was made from."""
    return {name: md5sum(raw_dir / name) for name in SOURCES[source].files}


MNIST_KEYS = ("x_train", "y_train", "x_test", "y_test")


# Keras' mnist.npz: 4 members, ~55 MB unpacked from 11 MB. Declared sizes bound what np.load may inflate.
MNIST_LIMITS = ZipLimits(members=16, total=256 << 20, member=128 << 20, ratio=50)


def read_mnist(path: Path) -> dict[str, np.ndarray]:
    """Keras' mnist.npz, checked: uint8 28x28 digits and integer labels 0..9 of matching lengths.

    Before NumPy decompresses anything, the zip's declared sizes are bounded and each array's header is
    read: its shape and dtype must fit its member's size (np.load allocates what the header says)."""
    try:
        check_regular_file(path, "an .npz file")
        with zipfile.ZipFile(path) as zf:
            check_zip(zf, path, MNIST_LIMITS)
            for info in zf.infolist():
                _check_npy_header(zf, info, path)
        with np.load(path, allow_pickle=False) as npz:
            missing = [key for key in MNIST_KEYS if key not in npz.files]
            if missing:
                raise PipelineError(f"{path}: missing array(s) {', '.join(missing)}; expected {', '.join(MNIST_KEYS)}")
            arrays = {key: npz[key] for key in MNIST_KEYS}
    except FileNotFoundError:
        raise PipelineError(f"{path}: not found (run the download stage first)") from None
    except (*READ_ERRORS, ValueError) as exc:
        raise PipelineError(f"{path}: not a readable .npz file ({exc})") from None
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.dtype != np.uint8 or not np.issubdtype(y.dtype, np.integer):
            raise PipelineError(
                f"{path}: x_{split}/y_{split} are {x.dtype}/{y.dtype}; expected uint8 digits and integer labels"
            )
        if x.ndim != 3 or x.shape[1:] != (28, 28) or len(x) != len(y) or not len(x) or y.min() < 0 or y.max() > 9:
            raise PipelineError(
                f"{path}: x_{split}/y_{split} are {x.shape}/{y.shape} with labels "
                f"{y.min() if len(y) else '-'}..{y.max() if len(y) else '-'}; expected (n, 28, 28) "
                "digits and n labels in 0..9"
            )
    return arrays


def _check_npy_header(zf: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path) -> None:
    """An .npy member's header: its shape x dtype must be what the member holds (no more than it declares)."""
    with zf.open(info) as f:
        try:
            version = np.lib.format.read_magic(f)
            read_header = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
            if version not in read_header:
                raise ValueError(f".npy format version {version}")
            shape, _, dtype = read_header[version](f)
        except READ_ERRORS as exc:
            raise PipelineError(f"{path}:{info.filename}: cannot read ({exc}); the file is corrupt") from None
        except (ValueError, SyntaxError, TypeError) as exc:
            raise PipelineError(f"{path}:{info.filename}: not an .npy array ({exc})") from None
    needed = math.prod(shape) * dtype.itemsize
    if dtype.hasobject or needed > info.file_size:
        raise PipelineError(
            f"{path}:{info.filename}: its header declares a {shape} {dtype} array ({needed} bytes), more than "
            f"the {info.file_size} bytes the member holds"
        )


def _unit_float(digits: np.ndarray) -> np.ndarray:
    """uint8 (n, 28, 28) -> float32 (n, 28, 28, 1) in [0, 1], the layout every split has."""
    return digits.astype(np.float32)[..., None] / 255.0


def build_mnist(raw_dir: Path, params: PrepareParams, source: str) -> tuple[Dataset, np.ndarray]:
    """MNIST at its native 28x28 grayscale, with a seeded, class-stratified validation split."""
    fixed = SOURCES[source].fixed
    if any(getattr(params, key) != value for key, value in fixed.items()):
        log.warning("MNIST is used as the course does, 28x28 grayscale: prepare.%s do not apply", "/".join(fixed))
    arrays = read_mnist(raw_dir / MNIST_FILE)
    x_train_all = _unit_float(arrays["x_train"])
    y_train_all = arrays["y_train"].astype(np.int64)
    # Each digit is its own "track": split_by_track then draws val_fraction of each class.
    val = split_by_track(np.arange(len(y_train_all)), y_train_all, params.val_fraction, params.seed)
    ds = Dataset(
        x={"train": x_train_all[~val], "val": x_train_all[val], "test": _unit_float(arrays["x_test"])},
        y={"train": y_train_all[~val], "val": y_train_all[val], "test": arrays["y_test"].astype(np.int64)},
        class_names=[str(d) for d in range(10)],
        meta={
            **expected_meta(source, params),
            "channels": 1,
            "num_classes": 10,
            "counts": {"train": int((~val).sum()), "val": int(val.sum()), "test": len(arrays["y_test"])},
            "skipped_images": [],
            "inputs_md5": inputs_md5(raw_dir, source),
        },
    )
    return ds, np.full((len(y_train_all) + len(arrays["y_test"]), 2), 28)


# one builder per raw format (sources.py says which format each data.source is in)
BUILDERS = {GTSRB_FORMAT: build_gtsrb, MNIST_FORMAT: build_mnist}


def build_dataset(raw_dir: Path, params: PrepareParams, source: str) -> tuple[Dataset, np.ndarray]:
    """The prepared dataset of `source`'s raw files in `raw_dir`, and the raw (width, height) of every image."""
    return BUILDERS[SOURCES[source].format](raw_dir, params, source)
