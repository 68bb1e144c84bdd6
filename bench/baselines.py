"""The straightforward way, as the FIDLE course's GTSRB notebooks do it: the yardstick `bench.run` uses.

Written plainly on purpose, the way the notebooks read: extract the archives to disk, then one
`skimage.io.imread` + `transform.resize` + colour operation per image in a Python loop, in one
process, kept as float64 and saved to a contiguous HDF5 file; training is `model.fit` on the NumPy
arrays read back from it, with FIDLE's settings.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
from skimage import color, exposure, io, transform
from skimage.filters import rank
from skimage.morphology import disk
from skimage.util import img_as_ubyte

from trafficsigns.data.archives import TEST_DIR, TEST_GT_CSV, TRAIN_DIR
from trafficsigns.data.classes import NUM_GTSRB_CLASSES
from trafficsigns.data.colour_modes import CHANNELS
from trafficsigns.data.sources import GTSRB_FILES

BATCH_SIZE = 64  # FIDLE GTSRB2's batch size


def extract(raw_dir: Path, dest: Path) -> None:
    for name in GTSRB_FILES:
        with zipfile.ZipFile(Path(raw_dir) / name) as zf:
            zf.extractall(dest)


def read_annotations(root: Path, split: str) -> tuple[list[Path], np.ndarray, np.ndarray]:
    """Image paths, ROIs (x1, y1, x2, y2) and labels from the extracted CSVs, with pandas."""
    if split == "train":
        frames = [
            pd.read_csv(root / TRAIN_DIR / f"{c:05d}" / f"GT-{c:05d}.csv", sep=";").assign(
                Filename=lambda df, c=c: f"{TRAIN_DIR}/{c:05d}/" + df["Filename"]
            )
            for c in range(NUM_GTSRB_CLASSES)
        ]
        df = pd.concat(frames)
    else:
        df = pd.read_csv(root / TEST_GT_CSV, sep=";").assign(Filename=lambda df: f"{TEST_DIR}/" + df["Filename"])
    paths = [root / name for name in df["Filename"]]
    return paths, df[["Roi.X1", "Roi.Y1", "Roi.X2", "Roi.Y2"]].to_numpy(), df["ClassId"].to_numpy()


def images_enhancement(paths: list[Path], rois: np.ndarray, size: int, mode: str) -> np.ndarray:
    """FIDLE GTSRB1's loop: read, crop to the ROI, resize, colour operation; float64."""
    out = []
    for path, (x1, y1, x2, y2) in zip(paths, rois):
        img = io.imread(path)
        if img.shape[2] == 4:
            img = color.rgba2rgb(img)
        img = img[y1 : y2 + 1, x1 : x2 + 1]
        img = transform.resize(img, (size, size))
        if mode == "RGB-HE":
            hsv = color.rgb2hsv(img)
            hsv[:, :, 2] = exposure.equalize_hist(hsv[:, :, 2])
            img = color.hsv2rgb(hsv)
        if mode == "L":
            img = color.rgb2gray(img)
        if mode == "L-HE":
            img = exposure.equalize_hist(color.rgb2gray(img))
        if mode == "L-LHE":
            img = rank.equalize(img_as_ubyte(color.rgb2gray(img)), disk(10)) / 255.0
        if mode == "L-CLAHE":
            img = exposure.equalize_adapthist(color.rgb2gray(img))
        out.append(img)
    return np.array(out, dtype="float64").reshape(-1, size, size, CHANNELS[mode])


def save_h5_dataset(path: Path, x_train, y_train, x_test, y_test) -> None:
    with h5py.File(path, "w") as f:
        f.create_dataset("x_train", data=x_train)
        f.create_dataset("y_train", data=y_train)
        f.create_dataset("x_test", data=x_test)
        f.create_dataset("y_test", data=y_test)


def prepare(raw_dir: Path, work: Path, size: int, mode: str, out: Path) -> int:
    """Archives -> HDF5 as the notebook does it; returns the number of images prepared."""
    extract(raw_dir, work)
    arrays = []
    for split in ("train", "test"):
        paths, rois, labels = read_annotations(work, split)
        arrays += [images_enhancement(paths, rois, size, mode), labels]
    save_h5_dataset(out, *arrays)
    return len(arrays[1]) + len(arrays[3])


def read_h5_dataset(path: Path) -> tuple[np.ndarray, ...]:
    with h5py.File(path, "r") as f:
        return f["x_train"][:], f["y_train"][:], f["x_test"][:], f["y_test"][:]


def compile_model(model):
    """FIDLE GTSRB2's compile: Adam with Keras' defaults."""
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def fit(model, x_train, y_train, x_test, y_test, **limits):
    """FIDLE GTSRB2's fit (the notebook validates on the test set); `limits`: steps, callbacks."""
    return model.fit(
        x_train, y_train, batch_size=BATCH_SIZE, epochs=1, verbose=0, validation_data=(x_test, y_test), **limits
    )
