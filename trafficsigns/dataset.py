"""From raw archives to the prepared `Dataset`: parse, split train/val by track, prepare images."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from trafficsigns.archives import TEST_GT_ZIP, TEST_ZIP, TRAIN_ZIP, read_test_split, read_train_split
from trafficsigns.classes import GTSRB_CLASS_NAMES
from trafficsigns.config import PrepareParams
from trafficsigns.errors import PipelineError
from trafficsigns.fsutil import md5sum
from trafficsigns.h5store import Dataset
from trafficsigns.images import prepare_split


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


def build_gtsrb(raw_dir: Path, params: PrepareParams, source: str) -> tuple[Dataset, np.ndarray]:
    """The prepared dataset, and the raw (width, height) of every image for the size histogram."""
    train, test = read_train_split(raw_dir), read_test_split(raw_dir)
    val = split_by_track(train.tracks, train.labels, params.val_fraction, params.seed)
    if not val.any():
        raise PipelineError(f"{raw_dir / TRAIN_ZIP}: no class has two tracks, so no validation split can be made")
    args = dict(size=params.size, mode=params.mode, roi_crop=params.roi_crop)
    x_train_all = prepare_split(train, desc="prepare train", **args)
    x_test = prepare_split(test, desc="prepare test", **args)
    ds = Dataset(
        x={"train": x_train_all[~val], "val": x_train_all[val], "test": x_test},
        y={"train": train.labels[~val], "val": train.labels[val], "test": test.labels},
        class_names=list(GTSRB_CLASS_NAMES),
        tracks={"train": train.tracks[~val], "val": train.tracks[val]},
        meta={
            "source": source,
            **params.model_dump(),
            "channels": int(x_train_all.shape[-1]),
            "num_classes": len(GTSRB_CLASS_NAMES),
            "counts": {"train": int((~val).sum()), "val": int(val.sum()), "test": len(test)},
            "inputs_md5": {name: md5sum(raw_dir / name) for name in (TRAIN_ZIP, TEST_ZIP, TEST_GT_ZIP)},
        },
    )
    return ds, np.concatenate([train.sizes, test.sizes])
