"""The prepared dataset: one HDF5 file with the three splits, class names, track ids and metadata.

Images are float32, uncompressed (gzip made batch reads several times slower) and chunked by
batches of whole images, the unit `train` and `evaluate` read.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from trafficsigns.errors import PipelineError
from trafficsigns.fsutil import atomic_path

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


def write_dataset(path: str | Path, ds: Dataset) -> None:
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        for split in SPLITS:
            x = ds.x[split]
            f.create_dataset(f"x_{split}", data=x, chunks=(max(1, min(len(x), CHUNK_IMAGES)),) + x.shape[1:])
            f.create_dataset(f"y_{split}", data=ds.y[split].astype(np.int16))
            if split in ds.tracks:
                f.create_dataset(f"track_{split}", data=ds.tracks[split].astype(np.int64))
        f.create_dataset("class_names", data=np.array(ds.class_names, dtype=h5py.string_dtype()))
        meta = f.create_group("meta")
        for key, value in ds.meta.items():
            meta.attrs[key] = json.dumps(value)


def read_meta(path: str | Path) -> dict:
    with _open(path) as f:
        return {k: json.loads(v) for k, v in f["meta"].attrs.items()}


def read_dataset(path: str | Path, splits=SPLITS) -> Dataset:
    with _open(path) as f:
        try:
            x = {s: f[f"x_{s}"][...] for s in splits}
            y = {s: f[f"y_{s}"][...].astype(np.int64) for s in splits}
            tracks = {s: f[f"track_{s}"][...] for s in splits if f"track_{s}" in f}
            names = [n.decode() if isinstance(n, bytes) else n for n in f["class_names"][...]]
            meta = {k: json.loads(v) for k, v in f["meta"].attrs.items()}
        except KeyError as exc:
            raise PipelineError(f"{path}: not a dataset written by `prepare` (missing {exc}); re-run prepare") from None
    return Dataset(x, y, names, tracks, meta)


def _open(path: str | Path) -> h5py.File:
    try:
        return h5py.File(path, "r")
    except FileNotFoundError:
        raise PipelineError(f"{path}: dataset not found (run the prepare stage first)") from None
    except OSError as exc:
        raise PipelineError(f"{path}: not a readable HDF5 file ({exc}); re-run prepare") from None
