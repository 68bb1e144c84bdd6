"""Offline augmentation of the training split: seeded, class-aware, the same bits on any number of workers.

Every output image is planned up front (its source image, copy number, flip and so its label), so the
class counts that `balance` needs are known before any pixel is computed. Each augmented image then
draws its transform from `default_rng([seed, 0, copy, source])` alone, so the result does not depend
on the chunking or on which worker computed it. Only the training split is read: val and test stay
exactly as `prepare` wrote them.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
from scipy import ndimage
from tqdm import tqdm

from trafficsigns.core.config import AugmentParams
from trafficsigns.core.workers import worker_pool
from trafficsigns.data.classes import FLIPS, GTSRB_CLASS_NAMES, flipped_class, has_flip_tables
from trafficsigns.data.h5store import CHUNK_IMAGES, Dataset, dataset_writer

log = logging.getLogger(__name__)

# Second word of every RNG key, so that no two streams share a key. All keys have four words:
# numpy's SeedSequence pads short keys with zeros, so [s, a, b] and [s, a, b, 0] would collide.
_PIXELS, _COPY_FLIPS, _BALANCE_FLIPS = 0, 1, 2
_DRAWS = 10  # uniforms per image, drawn whatever is enabled: toggling one family leaves the others' draws


class Ranges(NamedTuple):
    """The transform ranges in effect (the preset applied); what a worker needs besides the seed."""

    rotation: float = 0.0
    shift: float = 0.0
    zoom: float = 0.0
    shear: float = 0.0
    brightness: float = 0.0
    contrast: float = 0.0
    blur: float = 0.0
    noise: float = 0.0

    @classmethod
    def of(cls, params: AugmentParams) -> Ranges:
        return cls(**params.geometry(), **{key: getattr(params, key) for key in params.PHOTOMETRY})


# --- one image ------------------------------------------------------------------------------------


def flip_image(image: np.ndarray, code: int) -> np.ndarray:
    """Flip code 0 = none, else 1 + index in FLIPS (horizontal, vertical, both)."""
    return image[:, ::-1] if code == 1 else image[::-1] if code == 2 else image[::-1, ::-1] if code == 3 else image


def _affine(image: np.ndarray, r: Ranges, u: np.ndarray) -> np.ndarray:
    """Rotation, shear, zoom and shift as one affine map around the centre, bilinear.

    Edges are filled with the nearest border pixel, as Keras' ImageDataGenerator (FIDLE) does:
    reflecting would paint a mirrored second rim of the sign into the corners. Plain NumPy on
    scalars and elementwise operations (no matmul), five times faster than scipy's affine_transform
    on 32-px images and the same bits whatever else is in the batch.
    """
    h, w, channels = image.shape
    angle, shear = math.radians(r.rotation * u[0]), math.radians(r.shear * u[5])
    zy, zx = 1 / (1 + r.zoom * u[3]), 1 / (1 + r.zoom * u[4])  # the content is scaled by 1 + zoom * u
    cos, sin, tan = math.cos(angle), math.sin(angle), math.tan(shear)
    # (row, col) of the input pixel that each output pixel shows: rotate @ slant @ unscale, where the
    # slant moves columns in proportion to the row.
    m00, m01 = (cos - sin * tan) * zy, -sin * zx
    m10, m11 = (sin + cos * tan) * zy, cos * zx
    rows, cols = _centred_grid(h, w)
    y = np.clip(m00 * rows + m01 * cols + ((h - 1) / 2 + r.shift * u[1] * h), 0, h - 1)
    x = np.clip(m10 * rows + m11 * cols + ((w - 1) / 2 + r.shift * u[2] * w), 0, w - 1)
    y0, x0 = y.astype(np.intp), x.astype(np.intp)  # floor, as the coordinates are >= 0
    fy, fx = (y - y0).astype(np.float32)[..., None], (x - x0).astype(np.float32)[..., None]
    corner = (y0 * w + x0).ravel()
    down, right = ((y0 < h - 1) * w).ravel(), (x0 < w - 1).ravel().astype(np.intp)  # 0 on the last row/col

    def at(index: np.ndarray) -> np.ndarray:
        return np.take(image.reshape(h * w, channels), index, axis=0).reshape(h, w, channels)

    top, bottom = at(corner), at(corner + down)
    top = top + (at(corner + right) - top) * fx
    bottom = bottom + (at(corner + down + right) - bottom) * fx
    return (top + (bottom - top) * fy).astype(np.float32)


@functools.lru_cache(maxsize=8)
def _centred_grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    rows, cols = np.mgrid[:h, :w].astype(np.float64)
    return rows - (h - 1) / 2, cols - (w - 1) / 2


def transform(image: np.ndarray, r: Ranges, u: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Geometry, then brightness/contrast, blur and noise, each scaled by its draw in `u` (in [-1, 1])."""
    x = _affine(image, r, u) if any(r[:4]) else image.astype(np.float32)
    if r.brightness:
        x = x + float(r.brightness * u[6])
    if r.contrast:
        mean = x.mean(axis=(0, 1), keepdims=True)
        x = (x - mean) * float(1 + r.contrast * u[7]) + mean
    if r.blur:
        x = ndimage.gaussian_filter(x, sigma=(r.blur * abs(u[8]),) * 2 + (0,), mode="nearest")
    if r.noise:
        x = x + rng.standard_normal(x.shape, dtype=np.float32) * np.float32(r.noise * abs(u[9]))
    return np.clip(x, 0.0, 1.0).astype(np.float32)


def augment_image(image: np.ndarray, flip: int, r: Ranges, seed: int, copy: int, source: int) -> np.ndarray:
    """One augmented copy: a function of the image and (seed, copy, source) only."""
    rng = np.random.default_rng([seed, _PIXELS, copy, source])
    return transform(flip_image(image, flip), r, rng.uniform(-1, 1, _DRAWS), rng)


def _augment_chunk(
    images: np.ndarray, flips: np.ndarray, copies: np.ndarray, sources: np.ndarray, r: Ranges, seed: int
) -> np.ndarray:
    return np.stack(
        [augment_image(img, int(f), r, seed, int(c), int(s)) for img, f, c, s in zip(images, flips, copies, sources)]
    )


# --- the plan: which image, which copy, which flip, which label -----------------------------------


@dataclass(frozen=True)
class Plan:
    """Every output image in output order: the originals, copy 1 of each, copy 2..., then balance extras."""

    source: np.ndarray  # index into the training split
    copy: np.ndarray  # 0: the original, bit for bit; >= 1: augmented, part of its RNG key
    flip: np.ndarray  # 0: none, else 1 + index in FLIPS
    label: np.ndarray  # class after the flip

    def __len__(self) -> int:
        return len(self.source)


def _flip_tables(num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """target[class, code]: the class after flip `code` (-1: no sign); target[:, 0] is the class itself."""
    target = np.full((num_classes, 1 + len(FLIPS)), -1)
    target[:, 0] = np.arange(num_classes)
    for cid in range(num_classes):
        for code, name in enumerate(FLIPS, 1):
            target[cid, code] = -1 if (t := flipped_class(cid, name)) is None else t
    return target, target >= 0


def _choose_flips(labels: np.ndarray, u: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """For each image, one of its class's allowed flip codes (no flip included), picked by u in [0, 1)."""
    options = [np.flatnonzero(row) for row in allowed]
    codes = np.zeros(len(labels), dtype=np.int64)
    for cid in np.unique(labels):
        mine = labels == cid
        codes[mine] = options[cid][(u[mine] * len(options[cid])).astype(np.int64)]
    return codes


def make_plan(labels: np.ndarray, class_names: list[str], params: AugmentParams) -> Plan:
    """The originals, `copies` augmented versions of each, then extras that raise rare classes to `balance`.

    Balance extras cycle through the class's own images (copy numbers after the regular copies) and
    only take flips that keep the class, so each one lands where it is counted.
    """
    n, num_classes = len(labels), len(class_names)
    allowed = np.zeros((num_classes, 1 + len(FLIPS)), dtype=bool)
    allowed[:, 0] = True
    target = np.tile(np.arange(num_classes)[:, None], (1, 1 + len(FLIPS)))
    if params.flip and not has_flip_tables(class_names):
        # The committed params flip; switching to MNIST with one -S must still work (digits are not flipped).
        log.warning(
            "augment.flip: the flip tables are for the %d GTSRB classes, not this dataset's %d (%r...): no flips",
            len(GTSRB_CLASS_NAMES),
            num_classes,
            class_names[0],
        )
    elif params.flip:
        target, allowed = _flip_tables(num_classes)
    source = [np.arange(n)] * (params.copies + 1)
    copy = [np.full(n, c) for c in range(params.copies + 1)]
    flip = [np.zeros(n, dtype=np.int64)] + [
        _choose_flips(labels, np.random.default_rng([params.seed, _COPY_FLIPS, c, 0]).random(n), allowed)
        for c in range(1, params.copies + 1)
    ]
    counts = np.bincount(np.concatenate([target[labels, f] for f in flip]), minlength=num_classes)
    keeps = allowed & (target == np.arange(num_classes)[:, None])
    for cid in range(num_classes):
        own = np.flatnonzero(labels == cid)
        need = params.balance - counts[cid]
        if need <= 0:
            continue
        if not len(own):
            log.warning("augment.balance: class %d has no training image to augment; it stays at %d", cid, counts[cid])
            continue
        j = np.arange(need)
        u = np.random.default_rng([params.seed, _BALANCE_FLIPS, cid, 0]).random(need)
        source.append(own[j % len(own)])
        copy.append(params.copies + 1 + j // len(own))
        flip.append(_choose_flips(np.full(need, cid), u, keeps))
    source, copy, flip = (np.concatenate(parts).astype(np.int64) for parts in (source, copy, flip))
    return Plan(source=source, copy=copy, flip=flip, label=target[labels[source], flip])


# --- the stage's output ---------------------------------------------------------------------------


def augment_split(
    ds: Dataset, path: str | Path, params: AugmentParams, workers: int | None = None, chunk: int = CHUNK_IMAGES
) -> dict:
    """Write the training split of `ds`, augmented, as `read_dataset(path, ("train",))` reads it.

    The originals come first, bit for bit (copies 0 and balance 0 give the split unchanged); augmented
    images are computed in chunks on `workers` processes and written as they come, so memory holds the
    input split and a few chunks, never the whole output. Returns the counts stored in the meta.
    """
    x, y = ds.x["train"], ds.y["train"]
    plan = make_plan(y, ds.class_names, params)
    n, total = len(y), len(plan)
    counts = {
        "originals": n,
        "copies": n * params.copies,
        "balance": total - n * (params.copies + 1),
        "relabelled": int((plan.label != y[plan.source]).sum()),
        "total": total,
        "per_class": np.bincount(plan.label, minlength=ds.num_classes).tolist(),
    }
    log.info(
        "augment: %d originals + %d copies + %d balance extras = %d images (%d relabelled by flips)",
        n,
        counts["copies"],
        counts["balance"],
        total,
        counts["relabelled"],
    )
    meta = {**ds.meta, "augment": {"params": params.model_dump(), "geometry": params.geometry(), "counts": counts}}
    workers = workers or os.cpu_count() or 1
    pool = worker_pool(workers) if total > n else contextlib.nullcontext()
    with pool, dataset_writer(path) as writer:
        # an augmented image keeps its source's track: still the same physical sign
        tracks = ds.tracks["train"][plan.source] if "train" in ds.tracks else None
        writer.add_split("train", (total,) + x.shape[1:], plan.label, tracks, head=x, stream=True)
        writer.write_header(ds.class_names, meta)
        with tqdm(total=total - n, desc="augment", unit="img", disable=None) as bar:
            for start, block in _augmented_blocks(pool, 2 * workers, x, plan, n, Ranges.of(params), params.seed, chunk):
                writer.write("train", start, block)
                bar.update(len(block))
    return counts


def _augmented_blocks(
    pool: ProcessPoolExecutor, ahead: int, x: np.ndarray, plan: Plan, n: int, r: Ranges, seed: int, chunk: int
) -> Iterator[tuple[int, np.ndarray]]:
    """(first row, images) for plan rows n.., in order, with at most `ahead` chunks in flight.

    Chunk edges follow the HDF5 chunk grid, so each block fills whole chunks of the output.
    """
    edges = [n, *range(-(-n // chunk) * chunk, len(plan), chunk), len(plan)]
    spans = [(a, b) for a, b in zip(edges, edges[1:]) if b > a]
    pending: deque = deque()
    for a, b in spans:
        rows = slice(a, b)
        pending.append(
            (
                a,
                pool.submit(
                    _augment_chunk, x[plan.source[rows]], plan.flip[rows], plan.copy[rows], plan.source[rows], r, seed
                ),
            )
        )
        if len(pending) >= ahead:
            start, future = pending.popleft()
            yield start, future.result()
    while pending:
        start, future = pending.popleft()
        yield start, future.result()


# --- the figure ----------------------------------------------------------------------------------

# Strengths that show a family off in params.yaml, so the figure always has something to look at.
DEMO = Ranges(rotation=15.0, shift=0.15, zoom=0.25, shear=15.0, brightness=0.3, contrast=0.5, blur=1.2, noise=0.08)
_UNITS = {
    "rotation": "{:g}°",
    "shift": "{:g} × size",
    "zoom": "× {:g}",
    "shear": "{:g}°",
    "brightness": "+{:g}",
    "contrast": "× {:g}",
    "blur": "σ {:g} px",
    "noise": "σ {:g}",
}


def showcase(ds: Dataset, params: AugmentParams, copies_shown: int = 8) -> dict:
    """One training image, each family alone on it at the top of its range, and copies the stage makes of it.

    A family that is off is shown at a demonstration strength (marked "off"). The image is from the
    commonest class that has a mirror class, so the flip panel shows a relabel.
    """
    x, y, names = ds.x["train"], ds.y["train"], ds.class_names
    index = _showcase_index(x, y, names)
    image, r = x[index], Ranges.of(params)
    top = np.ones(_DRAWS)  # u = +1: each family at the top of its range
    families = []
    for name in Ranges._fields:
        value = getattr(r, name)
        shown = value or getattr(DEMO, name)
        amount = 1 + shown if name in ("zoom", "contrast") else shown
        one = Ranges(**{name: shown})
        families.append(
            (
                name,
                transform(image, one, top, np.random.default_rng(params.seed)),
                _UNITS[name].format(round(amount, 3)) + ("" if value else " (off)"),
            )
        )
    families.append(_flip_panel(image, int(y[index]), names, params.flip))
    plan = make_plan(y, names, params)
    rows = np.flatnonzero((plan.source == index) & (plan.copy > 0))[:copies_shown]
    made = [
        (
            f"copy {plan.copy[i]}: class {plan.label[i]}",
            augment_image(image, int(plan.flip[i]), r, params.seed, int(plan.copy[i]), index),
        )
        for i in rows
    ]
    return {
        "before": image,
        "label": f"class {y[index]}: {names[y[index]]}",
        "families": families,
        "made": made,
        "title": f"{describe(params)}\neach family alone at the top of its range; (off): at a demonstration strength",
    }


def _showcase_index(x: np.ndarray, y: np.ndarray, names: list[str]) -> int:
    """A clear but typical image (pixel spread at the class's 75th percentile) of the commonest class,
    preferring classes with a mirror class. The highest spread tends to be an overexposed outlier."""
    counts = np.bincount(y, minlength=len(names))
    if has_flip_tables(names):
        mirrored = [cid for cid in range(len(names)) if flipped_class(cid, "horizontal") not in (None, cid)]
        if counts[mirrored].any():
            counts = np.where(np.isin(np.arange(len(names)), mirrored), counts, 0)
    own = np.flatnonzero(y == counts.argmax())
    spread = np.array([x[i].std() for i in own])
    return int(own[np.argsort(spread, kind="stable")[(3 * len(own)) // 4]])


def _flip_panel(image: np.ndarray, cid: int, names: list[str], enabled: bool) -> tuple[str, np.ndarray, str]:
    if not has_flip_tables(names):
        return "flip", image, "no flip table"
    for code, name in enumerate(FLIPS, 1):
        if (target := flipped_class(cid, name)) is not None:
            return "flip", flip_image(image, code), f"{name} → {target}" + ("" if enabled else " (off)")
    return "flip", image, f"none for class {cid}"


def describe(params: AugmentParams) -> str:
    """The params in one or two lines, for the figure's title."""
    r = Ranges.of(params)
    ranges = ", ".join(f"{k} {v:g}" for k, v in r._asdict().items())
    return (
        f"augment: preset {params.preset}, copies {params.copies}, balance {params.balance}, "
        f"flip {'on' if params.flip else 'off'}, seed {params.seed}\n{ranges}"
    )
