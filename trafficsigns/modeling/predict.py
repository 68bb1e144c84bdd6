"""Classify people's own sign pictures with a model file, preprocessed exactly as `prepare` did for it.

The model's `.keras` file carries the preprocessing (size, colour mode) it was trained with, so the user
never re-types it. User pictures are taken to be crops of the sign: no ROI crop unless one is given.
"""

from __future__ import annotations

import stat
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from tqdm import tqdm

from trafficsigns.core.errors import PipelineError
from trafficsigns.data.colour_modes import CHANNELS
from trafficsigns.data.images import prepare_image
from trafficsigns.modeling.models import load_model, read_model_metadata

# What a folder is searched for (Pillow decodes them all); other files in a folder are not images.
IMAGE_SUFFIXES = frozenset({".ppm", ".pgm", ".pnm", ".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"})

Roi = tuple[int, int, int, int]


def find_images(paths: Iterable[str | Path]) -> list[Path]:
    """Files as given, whatever their suffix, and the image files under each folder (recursive, sorted)."""
    found: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        else:
            found.append(path)  # a missing or non-image file is reported when read, by name
    return found


def model_usage(model_path: str | Path) -> tuple[int, str, list[str]]:
    """(size, mode, class names) from the model's metadata: how `prepare` made its data, what its outputs mean."""
    metadata = read_model_metadata(model_path)
    try:
        steps = metadata["preprocessing"]
        size, mode, class_names = int(steps["size"]), steps["mode"], list(metadata["class_names"])
    except (KeyError, TypeError, ValueError):
        raise PipelineError(
            f"{model_path}: its metadata lacks the preprocessing size and mode or the class names; "
            "re-train it with this pipeline"
        ) from None
    if mode not in CHANNELS:
        raise PipelineError(f"{model_path}: unknown colour mode {mode!r} in its metadata")
    if not 8 <= size <= 256:  # prepare.image_size's range: each image is resized to size x size before the check
        raise PipelineError(f"{model_path}: preprocessing size {size} in its metadata is outside 8..256")
    return size, mode, class_names


def check_model_matches(model, size: int, mode: str, class_names: list[str], model_path: str | Path) -> None:
    """Refuse a model whose metadata does not describe it: its predictions would be silently wrong."""
    expected = ((size, size, CHANNELS[mode]), len(class_names))
    actual = (tuple(model.input_shape[1:]), model.output_shape[-1])
    if actual != expected:
        raise PipelineError(
            f"{model_path}: the model takes {actual[0]} images and gives {actual[1]} classes, "
            f"but its metadata says {expected[0]} and {expected[1]}"
        )


def best_classes(probs: np.ndarray, class_names: list[str], k: int) -> list[dict]:
    """The k most probable classes, most probable first (ties in class order, as in the metrics)."""
    best = np.argsort(-probs, kind="stable")[:k]
    return [{"class_id": int(c), "name": class_names[c], "probability": round(float(probs[c]), 6)} for c in best]


MAX_IMAGE_BYTES = 64 << 20  # a photo is a few MB; the pixel count is checked again from the header


def read_image_file(path: Path) -> bytes:
    """A file's bytes, after checking what it is: a FIFO would block for ever, a device never end, and a
    folder or a huge file is no image. A PipelineError names the file."""
    st = path.stat()  # stat does not block on a FIFO; open would
    if stat.S_ISDIR(st.st_mode):
        raise PipelineError(f"{path}: is a folder")
    if not stat.S_ISREG(st.st_mode):
        raise PipelineError(f"{path}: not a regular file (a FIFO, socket or device?); not read")
    if st.st_size > MAX_IMAGE_BYTES:
        raise PipelineError(f"{path}: {st.st_size} bytes, over the limit of {MAX_IMAGE_BYTES} for an image")
    with open(path, "rb") as f:
        data = f.read(MAX_IMAGE_BYTES + 1)  # it may have grown since stat
    if len(data) > MAX_IMAGE_BYTES:
        raise PipelineError(f"{path}: over the limit of {MAX_IMAGE_BYTES} bytes for an image")
    return data


def load_images(files: list[Path], size: int, mode: str, roi: Roi | None):
    """(paths, images, skipped) for `files`: the ones that decode, prepared; the others, each with its message."""
    names, images, skipped = [], [], []
    for path in files:
        try:
            images.append(prepare_image(read_image_file(path), str(path), size, mode, roi))
            names.append(str(path))
        except PipelineError as exc:  # its message names the file
            skipped.append((str(path), str(exc)))
        except OSError as exc:
            skipped.append((str(path), f"{path}: cannot read ({exc.strerror or exc})"))
    return names, images, skipped


def predict_files(
    model_path: str | Path, paths: Iterable[str | Path], top_k: int = 3, batch_size: int = 256, roi: Roi | None = None
) -> tuple[list[dict], list[tuple[str, str]]]:
    """Predict every image in `paths` (files or folders); returns (results, skipped).

    results: [{path, top_k: [{class_id, name, probability}]}] in path order; skipped: [(path, message)]
    for files that cannot be read or decoded. `roi` (x1, y1, x2, y2, inclusive) crops every image first.
    Raises PipelineError for a missing model, one without metadata, or when no image is found.
    """
    paths = list(paths)
    size, mode, class_names = model_usage(model_path)  # before the slow model load: fail fast on a wrong file
    files = find_images(paths)
    if not files:
        raise PipelineError(f"no images found in {', '.join(map(str, paths))}")
    model = load_model(model_path)
    check_model_matches(model, size, mode, class_names, model_path)
    results, skipped = [], []
    with tqdm(total=len(files), desc="predict", unit="img", disable=None) as bar:
        for start in range(0, len(files), batch_size):
            batch = files[start : start + batch_size]
            names, images, bad = load_images(batch, size, mode, roi)
            skipped += bad
            if images:
                probs = model.predict_on_batch(np.stack(images))
                results += [
                    {"path": name, "top_k": best_classes(p, class_names, top_k)} for name, p in zip(names, probs)
                ]
            bar.update(len(batch))
    return results, skipped


def format_table(results: list[dict]) -> str:
    """Results as an aligned text table: one row per candidate class, the path on each image's first row."""
    rows = [("image", "rank", "class", "name", "probability")]
    for result in results:
        for rank, guess in enumerate(result["top_k"], 1):
            rows.append(
                (
                    result["path"] if rank == 1 else "",
                    str(rank),
                    str(guess["class_id"]),
                    guess["name"],
                    f"{guess['probability']:.4f}",
                )
            )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    right = (False, True, True, False, True)  # numbers right-aligned
    return "\n".join(
        "  ".join(cell.rjust(w) if r else cell.ljust(w) for cell, w, r in zip(row, widths, right)).rstrip()
        for row in rows
    )
