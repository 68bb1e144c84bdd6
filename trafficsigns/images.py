"""Image preparation: decode, ROI crop, resize, FIDLE's colour/equalisation modes; in parallel.

Decoding and resizing use Pillow (an order of magnitude faster than scikit-image's resize); the
colour and equalisation operations are scikit-image's, exactly as FIDLE's GTSRB1 applies them.
"""
from __future__ import annotations

import ctypes
import io
import os
import signal
import sys
import zipfile
from concurrent.futures import ProcessPoolExecutor
from functools import partial

import numpy as np
from PIL import Image, UnidentifiedImageError
from skimage import color, exposure
from skimage.filters import rank
from skimage.morphology import disk
from skimage.util import img_as_ubyte
from tqdm import tqdm

from trafficsigns.archives import Split
from trafficsigns.errors import PipelineError

CHANNELS = {"RGB": 3, "RGB-HE": 3, "L": 1, "L-HE": 1, "L-LHE": 1, "L-CLAHE": 1}


MAX_PIXELS = 4096 * 4096  # GTSRB images are at most 250 px a side: anything huge is a memory bomb


def decode(data: bytes, where: str) -> Image.Image:
    """Decode an image, checking its declared size before any pixel is allocated."""
    try:
        img = Image.open(io.BytesIO(data))  # reads the header only
        if img.width * img.height > MAX_PIXELS:
            raise PipelineError(f"{where}: image declares {img.width}x{img.height} pixels, over the limit of "
                                f"{MAX_PIXELS} (a memory bomb?)")
        img.load()
    except UnidentifiedImageError:
        raise PipelineError(f"{where}: image does not decode (not an image format Pillow reads)") from None
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise PipelineError(f"{where}: image does not decode ({exc})") from None
    if img.width == 0 or img.height == 0:
        raise PipelineError(f"{where}: image has zero size")
    return img.convert("RGB")


def crop_and_resize(img: Image.Image, size: int, roi: tuple[int, int, int, int] | None) -> np.ndarray:
    """ROI crop (inclusive corners, clipped to the image), then resize; float32 RGB in [0, 1]."""
    if roi is not None:
        x1, y1, x2, y2 = roi
        box = (max(0, x1), max(0, y1), min(img.width, x2 + 1), min(img.height, y2 + 1))
        if box[2] > box[0] and box[3] > box[1]:
            img = img.crop(box)
    img = img.resize((size, size), Image.BILINEAR)
    return np.asarray(img, dtype=np.float32) / 255.0


def enhance(rgb: np.ndarray, mode: str) -> np.ndarray:
    """Apply one of FIDLE's modes to an RGB float image; returns (h, w, channels) float32 in [0, 1]."""
    if mode == "RGB":
        out = rgb
    elif mode == "RGB-HE":
        hsv = color.rgb2hsv(rgb)
        hsv[:, :, 2] = exposure.equalize_hist(hsv[:, :, 2])
        out = color.hsv2rgb(hsv)
    else:
        grey = color.rgb2gray(rgb)
        if mode == "L":
            out = grey
        elif mode == "L-HE":
            out = exposure.equalize_hist(grey)
        elif mode == "L-LHE":
            out = rank.equalize(img_as_ubyte(np.clip(grey, 0, 1)), footprint=disk(10)) / 255.0
        elif mode == "L-CLAHE":
            out = exposure.equalize_adapthist(np.clip(grey, 0, 1))
        else:
            raise PipelineError(f"unknown colour mode {mode!r}; allowed: {', '.join(CHANNELS)}")
        out = out[:, :, None]
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def prepare_image(data: bytes, where: str, size: int, mode: str, roi=None) -> np.ndarray:
    return enhance(crop_and_resize(decode(data, where), size, roi), mode)


_zip_cache: dict[str, zipfile.ZipFile] = {}


def _die_with_parent() -> None:
    """Pool initializer: on Linux, have the kernel kill this worker when the stage process dies.

    Forked workers otherwise outlive a `kill -9` of the stage and sleep forever on their queue.
    """
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def _prepare_chunk(archive: str, items: list[tuple[str, tuple | None]], size: int, mode: str,
                   skip_bad: bool) -> tuple[np.ndarray, list[tuple[int, str]]]:
    """Prepare some members of one archive; with `skip_bad`, a bad image is reported, not raised."""
    # Each worker process keeps its own handle: zip handles cannot be shared across processes.
    zf = _zip_cache.get(archive) or _zip_cache.setdefault(archive, zipfile.ZipFile(archive))
    out = np.zeros((len(items), size, size, CHANNELS[mode]), dtype=np.float32)
    bad = []
    for i, (member, roi) in enumerate(items):
        try:
            try:
                data = zf.read(member)
            except (zipfile.BadZipFile, OSError, EOFError) as exc:
                raise PipelineError(f"{archive}:{member}: cannot read ({exc}); the archive is corrupt") from None
            out[i] = prepare_image(data, f"{archive}:{member}", size, mode, roi)
        except PipelineError as exc:
            if not skip_bad:
                raise
            bad.append((i, str(exc)))
    return out, bad


def prepare_split(split: Split, size: int, mode: str, roi_crop: bool, desc: str, skip_bad: bool = False,
                  workers: int | None = None, chunk: int = 256) -> tuple[np.ndarray, dict[int, str]]:
    """All images of a split as one (n, size, size, c) float32 array, in CSV order, on all cores.

    Also returns {index: reason} of the images that failed (always empty unless `skip_bad`).
    """
    if mode not in CHANNELS:
        raise PipelineError(f"unknown colour mode {mode!r}; allowed: {', '.join(CHANNELS)}")
    rois = [tuple(int(v) for v in r) if roi_crop else None for r in split.rois]
    items = list(zip(split.members, rois))
    chunks = [items[i:i + chunk] for i in range(0, len(items), chunk)]
    work = partial(_prepare_chunk, str(split.archive), size=size, mode=mode, skip_bad=skip_bad)
    out = np.empty((len(items), size, size, CHANNELS[mode]), dtype=np.float32)
    failed: dict[int, str] = {}
    with ProcessPoolExecutor(max_workers=workers or os.cpu_count(), initializer=_die_with_parent) as pool, \
            tqdm(total=len(items), desc=desc, unit="img", disable=None) as bar:
        start = 0
        for block, bad in pool.map(work, chunks):
            out[start:start + len(block)] = block
            failed.update((start + i, reason) for i, reason in bad)
            start += len(block)
            bar.update(len(block))
    return out, failed
