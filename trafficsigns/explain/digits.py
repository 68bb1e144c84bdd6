"""Offline handwritten-style digits, MNIST-like, because the real MNIST cannot be downloaded here.

Each digit is drawn in Pillow's bundled scalable font on a 4× supersampled canvas, then given a
random pen (stroke width), an affine distortion (rotation ±15°, shear, aspect), a smooth elastic-ish
jitter (a warped mesh), and blur; then it is normalised like MNIST: the ink's bounding box scaled to
fit a 20×20 box (here 17 to 20 px), pasted in 28×28 with its centre of mass at the centre, then
shifted by up to a pixel. White on black, uint8.

Every image draws from its own child of `SeedSequence([seed, stream])`: the same arguments give
the same digits (with the same pinned Pillow), and no two images share a random stream.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from trafficsigns.core.fsutil import atomic_path

SIZE = 28  # MNIST's image side
SS = 4  # supersampling of the drawing canvas
CANVAS = SIZE * SS
MESH = 4  # the elastic jitter moves the nodes of a MESH×MESH grid


@lru_cache(maxsize=1)
def _font() -> ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=int(CANVAS * 0.6))


def render_digits(n: int, seed: int, *, stream: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n digits, classes balanced and shuffled -> x uint8 (n, 28, 28), y int64 (n,).

    `stream` picks an independent set for the same seed (`write_mnist_npz`: 0 train, 1 test).
    """
    labels_seq, *image_seqs = np.random.SeedSequence([seed, stream]).spawn(n + 1)
    y = np.random.default_rng(labels_seq).permutation(np.arange(n) % 10)
    x = np.zeros((n, SIZE, SIZE), np.uint8)
    for i, (digit, seq) in enumerate(zip(y, image_seqs)):
        x[i] = render_digit(int(digit), np.random.default_rng(seq))
    return x, y.astype(np.int64)


def render_digit(digit: int, rng: np.random.Generator) -> np.ndarray:
    """One digit 0-9 as uint8 (28, 28)."""
    img = _glyph(digit, rng)
    img = _affine(img, rng)
    img = _elastic(img, rng)
    img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 2.5)))
    return _mnist_frame(img, rng)


def _glyph(digit: int, rng: np.random.Generator) -> Image.Image:
    """The digit centred on the canvas; a stroke outline makes the pen thicker."""
    img = Image.new("L", (CANVAS, CANVAS), 0)
    ImageDraw.Draw(img).text(
        (CANVAS / 2, CANVAS / 2),
        str(digit),
        fill=255,
        font=_font(),
        anchor="mm",
        stroke_width=int(rng.integers(0, 5)),
        stroke_fill=255,
    )
    return img


def _affine(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Rotate (±15°), shear and stretch about the canvas centre."""
    angle = np.deg2rad(rng.uniform(-15, 15))
    rotate = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    shear = np.array([[1, rng.uniform(-0.3, 0.3)], [0, 1]])
    stretch = np.diag([rng.uniform(0.7, 1.2), rng.uniform(0.9, 1.1)])
    # Pillow maps each output pixel back to the input: in = c + M⁻¹ (out - c)
    inverse = np.linalg.inv(rotate @ shear @ stretch)
    centre = np.array([CANVAS / 2, CANVAS / 2])
    offset = centre - inverse @ centre
    data = (*inverse[0], offset[0], *inverse[1], offset[1])
    return img.transform(img.size, Image.Transform.AFFINE, data, resample=Image.Resampling.BILINEAR)


def _elastic(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Warp by a MESH×MESH grid whose nodes are moved at random: a smooth, piecewise-bilinear wobble."""
    cell = CANVAS / MESH
    nodes = np.stack(np.meshgrid(np.arange(MESH + 1), np.arange(MESH + 1), indexing="xy"), axis=-1) * cell
    nodes = nodes + rng.normal(0, 0.04 * CANVAS, nodes.shape)  # nodes[row, col] = source (x, y)
    mesh = []
    for r, c in np.ndindex(MESH, MESH):
        box = tuple(int(round(v)) for v in (c * cell, r * cell, (c + 1) * cell, (r + 1) * cell))
        # source quad corners: upper-left, lower-left, lower-right, upper-right
        quad = np.concatenate([nodes[r, c], nodes[r + 1, c], nodes[r + 1, c + 1], nodes[r, c + 1]])
        mesh.append((box, tuple(quad)))
    return img.transform(img.size, Image.Transform.MESH, mesh, resample=Image.Resampling.BILINEAR)


def _mnist_frame(img: Image.Image, rng: np.random.Generator) -> np.ndarray:
    """MNIST's normalisation: ink box fitted to a ~20 px box, centre of mass at the centre of 28×28."""
    ink = np.asarray(img, np.float32)
    rows, cols = np.nonzero(ink > 32)
    ink = ink[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    box = rng.uniform(17, 20)
    scale = box / max(ink.shape)
    h, w = (max(1, round(n * scale)) for n in ink.shape)
    patch = np.asarray(Image.fromarray(ink).resize((w, h), Image.Resampling.LANCZOS)).clip(0, None)
    patch *= 255 / patch.max()  # thin strokes lose contrast when shrunk; MNIST's ink saturates
    com = (np.indices(patch.shape) * patch).sum(axis=(1, 2)) / patch.sum()  # (row, col)
    top, left = (
        int(np.clip(round(SIZE / 2 - 0.5 - c + rng.integers(-1, 2)), 0, SIZE - n)) for c, n in zip(com, (h, w))
    )
    out = np.zeros((SIZE, SIZE), np.float32)
    out[top : top + h, left : left + w] = patch
    return out.round().astype(np.uint8)


def write_mnist_npz(path: str | Path, n_train: int, n_test: int, seed: int) -> None:
    """An `.npz` with the keys and dtypes of Keras' `mnist.npz`: x_train/x_test uint8 (n, 28, 28),
    y_train/y_test uint8 (n,); train and test are independent draws (streams 0 and 1)."""
    x_train, y_train = render_digits(n_train, seed, stream=0)
    x_test, y_test = render_digits(n_test, seed, stream=1)
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez_compressed(
            tmp, x_train=x_train, y_train=y_train.astype(np.uint8), x_test=x_test, y_test=y_test.astype(np.uint8)
        )
