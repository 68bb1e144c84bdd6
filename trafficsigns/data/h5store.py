"""The prepared dataset: one HDF5 file with the three splits, class names, track ids and metadata.

Images are float32, uncompressed (gzip made batch reads several times slower) and chunked by
batches of whole images, the unit `train` and `evaluate` read.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from trafficsigns.core.config import PrepareParams
from trafficsigns.core.errors import PipelineError
from trafficsigns.core.fsutil import atomic_path, check_regular_file
from trafficsigns.data.sources import SOURCES

SPLITS = ("train", "val", "test")
CHUNK_IMAGES = 256


@dataclass
class Dataset:
    x: dict[str, np.ndarray]  # split -> (n, h, w, c) float32 in [0, 1]
    y: dict[str, np.ndarray]  # split -> (n,) int class ids
    class_names: list[str]
    tracks: dict[str, np.ndarray] = field(default_factory=dict)  # split -> (n,) track ids (train, val)
    meta: dict = field(default_factory=dict)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.x["train"].shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


class DatasetWriter:
    """The one writer of the format: `x_<split>` created at its final shape and chunking, then filled.

    `add_split` writes a split's images (or the first ones, if it is streamed) with its labels and track
    ids; `write` fills a streamed split block by block, so it never has to be in memory whole;
    `write_header` stores the class names and the meta. The file's bytes follow the order of the calls
    (HDF5 allocates space as data comes, and a streamed split's last chunk when the file closes).
    """

    def __init__(self, f: h5py.File):
        self._file = f
        self._streams: dict[str, h5py.Dataset] = {}

    def add_split(
        self,
        split: str,
        shape: tuple[int, ...],
        y: np.ndarray,
        tracks: np.ndarray | None = None,
        head: np.ndarray | None = None,
        stream: bool = False,
    ) -> None:
        """Create `x_<split>` of `shape` (float32, chunks of whole images), write `head` as its first
        images, then `y` and `tracks` (one per image).

        Without `stream`, `head` is the whole split, closed at once. With it, `write` adds the rest, and
        the split stays open (its chunk cache with it) until the file closes.
        """
        x = self._file.create_dataset(f"x_{split}", shape=shape, dtype=np.float32, chunks=image_chunks(shape))
        if head is not None and len(head):
            x[: len(head)] = head
        if stream:
            self._streams[split] = x
        elif head is None or len(head) != shape[0]:
            raise ValueError(f"x_{split}: {0 if head is None else len(head)} images for {shape[0]}; stream the rest")
        del x  # a split written whole is closed here, its last chunk flushed before the labels
        self._file.create_dataset(f"y_{split}", data=y.astype(np.int16))
        if tracks is not None:
            self._file.create_dataset(f"track_{split}", data=tracks.astype(np.int64))

    def write(self, split: str, start: int, images: np.ndarray) -> None:
        """Images `start`.. of `x_<split>`, a split that `add_split` streams."""
        self._streams[split][start : start + len(images)] = images

    def write_header(self, class_names: list[str], meta: dict) -> None:
        self._file.create_dataset("class_names", data=np.array(class_names, dtype=h5py.string_dtype()))
        group = self._file.create_group("meta")
        for key, value in meta.items():
            group.attrs[key] = json.dumps(value)


@contextlib.contextmanager
def dataset_writer(path: str | Path) -> Iterator[DatasetWriter]:
    """A `DatasetWriter` on a temporary file that replaces `path` only once the block completes."""
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        yield DatasetWriter(f)


def write_dataset(path: str | Path, ds: Dataset) -> None:
    with dataset_writer(path) as writer:
        for split in SPLITS:
            x = ds.x[split]
            writer.add_split(split, x.shape, ds.y[split], ds.tracks.get(split), head=x)
        writer.write_header(ds.class_names, ds.meta)


def image_chunks(shape: tuple[int, ...]) -> tuple[int, ...]:
    """HDF5 chunk shape for images of `shape`: CHUNK_IMAGES whole images (fewer if the split is smaller)."""
    return (max(1, min(shape[0], CHUNK_IMAGES)),) + tuple(shape[1:])


def read_dataset(path: str | Path, splits=SPLITS, expected: dict | None = None) -> Dataset:
    """The dataset's `splits`; with `expected` meta values, also `check_dataset` against them."""
    with _open(path) as f:
        needed = [f"{kind}_{s}" for s in splits for kind in ("x", "y")] + ["class_names", "meta"]
        missing = [key for key in needed if key not in f]
        if missing:
            raise PipelineError(
                f"{path}: not a dataset written by `prepare` (missing {', '.join(missing)}); re-run prepare"
            )
        for key in needed[:-2]:
            _check_stored(f[key], path)
        try:
            ds = Dataset(
                x={s: f[f"x_{s}"][...] for s in splits},
                y={s: f[f"y_{s}"][...].astype(np.int64) for s in splits},
                class_names=_class_names(f),
                tracks={s: f[f"track_{s}"][...] for s in splits if f"track_{s}" in f},
                meta=_meta(f),
            )
        except (OSError, ValueError, TypeError) as exc:  # a damaged chunk, a non-UTF-8 name, broken meta JSON
            raise PipelineError(f"{path}: cannot read ({exc}); the file is damaged, re-run prepare") from None
    for split, x in ds.x.items():
        check_pixels(x, f"{path}: x_{split}")
    if expected is not None:
        check_dataset(ds, path, expected)
    return ds


def _check_stored(dataset: h5py.Dataset, path: str | Path) -> None:
    """A dataset must store about what it declares: HDF5 reads unwritten chunks as fill values, so a tiny
    file can declare terabytes, which reading it would allocate. Our files are uncompressed (ratio 1)."""
    declared, stored = dataset.size * dataset.dtype.itemsize, dataset.id.get_storage_size()
    if declared > max(4 * stored, 16 << 20):
        raise PipelineError(
            f"{path}: {dataset.name.lstrip('/')} declares {dataset.shape} {dataset.dtype} ({declared} bytes) but "
            f"stores {stored}: not a dataset prepare wrote; re-run prepare"
        )


def check_pixels(x: np.ndarray, where: str) -> None:
    """Images must be finite and in [0, 1]: HDF5 keeps no checksum, so a damaged file reads as NaN or garbage
    and would be trained on or scored (a NaN test set scored 3.6 %, exit 0) without a word."""
    if not len(x):
        return
    low, high = x.min(), x.max()  # NaN propagates through min and max, so one pass each finds it
    if not (0.0 <= low and high <= 1.0):
        bad = "NaN" if np.isnan(low) or np.isnan(high) else f"values {low:g}..{high:g}"
        raise PipelineError(
            f"{where} holds {bad}, outside the [0, 1] pixels prepare writes: the file is damaged; "
            "re-run prepare (dvc repro --force prepare)"
        )


def read_summary(path: str | Path) -> tuple[dict[str, int], list[str], dict]:
    """Images per split, class names and meta, without loading any image."""
    with _open(path) as f:
        try:
            return {s: len(f[f"y_{s}"]) for s in SPLITS if f"y_{s}" in f}, _class_names(f), _meta(f)
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise PipelineError(f"{path}: cannot read ({exc}); the file is damaged, re-run prepare") from None


def _class_names(f: h5py.File) -> list[str]:
    return [n.decode() if isinstance(n, bytes) else n for n in f["class_names"][...]]


def _meta(f: h5py.File) -> dict:
    return {k: json.loads(v) for k, v in f["meta"].attrs.items()}


def expected_meta(source: str, params: PrepareParams) -> dict:
    """The dataset metadata that params imply: what `train` checks the HDF5 file against."""
    return {"source": source, **params.model_dump(), **SOURCES[source].fixed}


def check_dataset(ds: Dataset, path: str | Path, expected: dict) -> None:
    """Stop with a clear message if the dataset is inconsistent or was prepared with other settings.

    `expected` maps meta keys to the values the current params imply (size, mode, source...): a
    mismatch means the HDF5 file is stale, e.g. params.yaml was edited without re-running `prepare`.
    """
    stale = {k: (ds.meta.get(k), v) for k, v in expected.items() if ds.meta.get(k) != v}
    if stale:
        diffs = ", ".join(f"{k}: file has {got!r}, params say {want!r}" for k, (got, want) in stale.items())
        raise PipelineError(f"{path} is stale ({diffs}); re-run `dvc repro` (or the prepare stage)")
    shape = (ds.meta.get("size"), ds.meta.get("size"), ds.meta.get("channels"))
    for split, x in ds.x.items():
        y = ds.y[split]
        if x.dtype != np.float32 or x.shape[1:] != shape or len(x) != len(y) or not len(x):
            raise PipelineError(
                f"{path}: x_{split}/y_{split} have shapes {x.shape}/{y.shape} and dtype {x.dtype}; "
                f"expected n > 0 float32 images of {shape} and n labels"
            )
        if y.min() < 0 or y.max() >= ds.num_classes:
            raise PipelineError(f"{path}: y_{split} has class ids outside 0..{ds.num_classes - 1}")


def _open(path: str | Path) -> h5py.File:
    try:
        check_regular_file(path, "an HDF5 dataset")
        return h5py.File(path, "r")
    except FileNotFoundError:
        raise PipelineError(f"{path}: dataset not found (run the prepare stage first)") from None
    except OSError as exc:
        raise PipelineError(f"{path}: not a readable HDF5 file ({exc}); re-run prepare") from None
