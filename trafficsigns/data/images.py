"""Image preparation: decode, ROI crop, resize, FIDLE's colour/equalisation modes; in parallel.

Decoding and resizing use Pillow (an order of magnitude faster than scikit-image's resize); the
colour and equalisation operations are scikit-image's, exactly as FIDLE's GTSRB1 applies them
(CLAHE through `clahe`, the same arithmetic vectorised over many images).
"""

from __future__ import annotations

import io
import math
import zipfile
from functools import partial

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from skimage import color, exposure
from skimage.exposure._adapthist import NR_OF_GRAY, map_histogram
from skimage.filters import rank
from skimage.morphology import disk
from skimage.util import img_as_ubyte, img_as_uint
from tqdm import tqdm

from trafficsigns.core.errors import PipelineError
from trafficsigns.core.workers import worker_pool
from trafficsigns.core.zipcheck import read_member
from trafficsigns.data.archives import Split
from trafficsigns.data.colour_modes import CLAHE, HE, LHE, ColourMode, colour_mode

MAX_PIXELS = 4096 * 4096  # GTSRB images are at most 250 px a side: anything huge is a memory bomb
WIDE_GREY = ("I", "I;16", "I;16B", "I;16L", "I;16N")  # Pillow's modes for 16-bit (and 32-bit) grey
WIDE_MAX = 65535  # Pillow scales a PGM of any maxval up to 16 bits; 16-bit PNG and TIFF are in 0..65535


def decode(data: bytes, where: str) -> Image.Image:
    """Decode an image to 8-bit RGB, upright: its declared size checked before any pixel is allocated, a 16-bit
    or float grey image scaled from its own range (Pillow's convert would clip it to 255, i.e. white), and a
    photo turned as its EXIF orientation says (as every viewer shows it)."""
    try:
        img = Image.open(io.BytesIO(data))  # reads the header only
        if img.width * img.height > MAX_PIXELS:
            raise PipelineError(
                f"{where}: image declares {img.width}x{img.height} pixels, over the limit of "
                f"{MAX_PIXELS} (a memory bomb?)"
            )
        img.load()
        img = ImageOps.exif_transpose(img)
    except PipelineError:
        raise
    except UnidentifiedImageError:
        raise PipelineError(f"{where}: image does not decode (not an image format Pillow reads)") from None
    except Exception as exc:  # a damaged file trips Pillow's parsers in many ways (struct.error, IndexError...)
        raise PipelineError(f"{where}: image does not decode ({type(exc).__name__}: {exc})") from None
    if img.width == 0 or img.height == 0:
        raise PipelineError(f"{where}: image has zero size")
    if img.mode in WIDE_GREY or img.mode == "F":
        img = _wide_to_8bit(img, where)
    return img.convert("RGB")


def _wide_to_8bit(img: Image.Image, where: str) -> Image.Image:
    """A 16/32-bit integer or float grey image as 8-bit grey, scaled from its full range (0..65535, or 0..1)."""
    pixels = np.asarray(img, dtype=np.float64)
    top = 1.0 if img.mode == "F" else WIDE_MAX
    if not np.isfinite(pixels).all() or pixels.min() < 0 or pixels.max() > top:
        raise PipelineError(
            f"{where}: {img.mode} image with values {pixels.min():g}..{pixels.max():g}, outside 0..{top:g}; "
            "its intended range is unknown (save it as 8- or 16-bit)"
        )
    return Image.fromarray(np.round(pixels * (255 / top)).astype(np.uint8), mode="L")


def crop_and_resize(
    img: Image.Image, size: int, roi: tuple[int, int, int, int] | None, where: str = "image"
) -> np.ndarray:
    """ROI crop (inclusive corners, inside the image), then resize; float32 RGB in [0, 1].

    A ROI that is not inside the image is an error: cropping what is left of it, or ignoring it, would
    classify something else than what was asked for, without a word."""
    if roi is not None:
        x1, y1, x2, y2 = roi
        if not (0 <= x1 <= x2 < img.width and 0 <= y1 <= y2 < img.height):
            raise PipelineError(
                f"{where}: ROI ({x1},{y1})-({x2},{y2}) is not inside the {img.width}x{img.height} image"
            )
        img = img.crop((x1, y1, x2 + 1, y2 + 1))
    img = img.resize((size, size), Image.BILINEAR)
    return np.asarray(img, dtype=np.float32) / 255.0


def _colour(rgb: np.ndarray, mode: ColourMode) -> np.ndarray:
    """One image's colour operation; for CLAHE only the grey image, which `enhance_batch` equalises."""
    if mode.channels == 3:
        if mode.equalise is None:
            return rgb
        hsv = color.rgb2hsv(rgb)  # HE, on the value channel
        hsv[:, :, 2] = exposure.equalize_hist(hsv[:, :, 2])
        return color.hsv2rgb(hsv)
    grey = color.rgb2gray(rgb)
    if mode.equalise is None:
        return grey
    if mode.equalise == HE:
        return exposure.equalize_hist(grey)
    if mode.equalise == LHE:
        return rank.equalize(img_as_ubyte(np.clip(grey, 0, 1)), footprint=disk(10)) / 255.0
    return np.clip(grey, 0, 1)  # CLAHE


def enhance_batch(rgb: np.ndarray, mode: str) -> np.ndarray:
    """Apply one of FIDLE's modes to (n, h, w, 3) RGB float images; (n, h, w, channels) float32 in [0, 1]."""
    spec = colour_mode(mode)
    out = rgb if spec.channels == 3 and spec.equalise is None else np.stack([_colour(image, spec) for image in rgb])
    if spec.equalise == CLAHE:
        out = clahe(out)
    if spec.channels == 1:
        out = out[..., None]
    return np.clip(out, 0.0, 1.0).astype(np.float32, copy=False)


def enhance(rgb: np.ndarray, mode: str) -> np.ndarray:
    """`enhance_batch` for one (h, w, 3) image."""
    return enhance_batch(rgb[None], mode)[0]


CLAHE_BLOCK = 16  # images per vectorised CLAHE step: bigger blocks spill out of the CPU caches


def clahe(grey: np.ndarray) -> np.ndarray:
    """`skimage.exposure.equalize_adapthist` with its defaults (as FIDLE calls it) on n (h, w) images, bit for bit.

    scikit-image loops in Python over the tiles of each image (~1.5 ms for 48 px); `_clahe_block`
    does the same integer arithmetic for all tiles of a block of images at once.
    """
    kernel = tuple(max(s // 8, 1) for s in grey.shape[1:])
    levels = np.stack(
        [np.round(exposure.rescale_intensity(img_as_uint(g), out_range=(0, NR_OF_GRAY - 1))) for g in grey]
    ).astype(np.min_scalar_type(NR_OF_GRAY))
    mapped = np.concatenate(
        [_clahe_block(levels[i : i + CLAHE_BLOCK], kernel) for i in range(0, len(levels), CLAHE_BLOCK)]
    )
    return np.stack([exposure.rescale_intensity(m.astype(grey.dtype, copy=False)) for m in mapped])


def _clahe_block(image: np.ndarray, kernel: tuple[int, int], clip_limit: float = 0.01, nbins: int = 256) -> np.ndarray:
    """skimage's `_clahe` for 2-D images, with a leading image axis (same steps, same dtypes)."""
    n, (kh, kw) = len(image), kernel
    pad_start = [k // 2 for k in kernel]
    pad_end = [(k - s % k) % k + math.ceil(k / 2) for k, s in zip(kernel, image.shape[1:])]
    image = np.pad(image, [(0, 0), *zip(pad_start, pad_end)], mode="reflect")
    lut = np.arange(NR_OF_GRAY, dtype=image.dtype)
    lut //= 1 + NR_OF_GRAY // nbins
    image = lut[image]
    h, w = image.shape[1:]
    nh, nw = h // kh, w // kw
    # one clipped, equalised histogram per contextual region (the tiles, offset by half a kernel)
    tiles = image[:, kh // 2 : kh // 2 + (nh - 1) * kh, kw // 2 : kw // 2 + (nw - 1) * kw]
    tiles = tiles.reshape(n, nh - 1, kh, nw - 1, kw).transpose(0, 1, 3, 2, 4).reshape(-1, kh * kw)
    rows = np.arange(len(tiles))[:, None] * nbins
    hist = np.bincount((rows + tiles).ravel(), minlength=len(tiles) * nbins).reshape(-1, nbins).astype(np.int32)
    elements = kh * kw
    limit = int(np.clip(clip_limit * elements, 1, None)) if clip_limit > 0 else elements
    hist = map_histogram(_clip_histograms(hist, limit), 0, NR_OF_GRAY - 1, elements)
    maps = np.pad(hist.reshape(n, nh - 1, nw - 1, nbins), [(0, 0), (1, 1), (1, 1), (0, 0)], mode="edge")
    # bilinear interpolation between the maps of the four regions around each block of pixels
    blocks = image.reshape(n, nh, kh, nw, kw).transpose(0, 1, 3, 2, 4).reshape(n, nh * nw, kh * kw)
    corner = ((np.arange(n)[:, None, None] * (nh + 1) + np.arange(nh)[:, None]) * (nw + 1) + np.arange(nw)) * nbins
    corner = corner.reshape(n, nh * nw, 1) + blocks
    coeffs = [c.T.flatten() for c in np.meshgrid(np.arange(kw) / kw, np.arange(kh) / kh, indexing="ij")]
    inverse = [1 - c for c in coeffs]
    result = np.zeros(blocks.shape, dtype=np.float32)
    for ey, ex in np.ndindex(2, 2):
        mapped = maps.ravel()[corner + (ey * (nw + 1) + ex) * nbins]
        weights = np.prod([(inverse, coeffs)[ex][0], (inverse, coeffs)[ey][1]], 0)
        result += (mapped * weights).astype(np.float32)
    result = result.astype(image.dtype).reshape(n, nh, nw, kh, kw).transpose(0, 1, 3, 2, 4).reshape(n, h, w)
    return result[:, pad_start[0] : h - pad_end[0], pad_start[1] : w - pad_end[1]]


def _clip_histograms(hist: np.ndarray, limit: int) -> np.ndarray:
    """skimage's `clip_histogram` on every row of `hist` at once: clip at `limit`, redistribute the excess."""
    excess = np.where(hist > limit, hist - limit, 0).sum(axis=1)
    np.minimum(hist, limit, out=hist)
    increment = excess // hist.shape[1]
    upper = (limit - increment)[:, None]
    low = hist < upper
    excess -= low.sum(axis=1) * increment
    hist += low * increment[:, None].astype(hist.dtype)
    mid = (hist >= upper) & (hist < limit)
    excess += np.where(mid, hist - limit, 0).sum(axis=1)
    hist[mid] = limit
    # skimage's loop, in lockstep over the rows that still have excess: from bin `index` on, every
    # `step`-th bin under the limit gets one more count; a pass over all bins that frees nothing ends a row
    bins = np.arange(hist.shape[1])
    live = np.flatnonzero(excess > 0)
    while live.size:
        before = excess[live]
        going = live
        for index in range(hist.shape[1]):
            under = hist[going] < limit
            step = np.maximum(1, under.sum(axis=1) // excess[going])
            add = under & (bins >= index) & ((bins - index) % step[:, None] == 0)
            hist[going] += add.astype(hist.dtype)
            excess[going] -= add.sum(axis=1)
            going = going[excess[going] > 0]
            if not going.size:
                break
        live = live[(excess[live] > 0) & (excess[live] != before)]
    return hist


def prepare_image(data: bytes, where: str, size: int, mode: str, roi=None) -> np.ndarray:
    return enhance(crop_and_resize(decode(data, where), size, roi, where), mode)


_zip_cache: dict[str, zipfile.ZipFile] = {}


def _prepare_chunk(
    archive: str, items: list[tuple], size: int, mode: str, skip_bad: bool
) -> tuple[np.ndarray, list[tuple[int, str]]]:
    """Prepare some members of one archive; with `skip_bad`, a bad image is reported, not raised.

    items: (member, ROI or None[, annotated (width, height)]); an image whose size is not the annotated one
    is refused, since its ROI would crop somewhere else."""
    # Each worker process keeps its own handle: zip handles cannot be shared across processes.
    zf = _zip_cache.get(archive) or _zip_cache.setdefault(archive, zipfile.ZipFile(archive))
    rgb = np.zeros((len(items), size, size, 3), dtype=np.float32)
    bad = []
    for i, (member, roi, *annotated) in enumerate(items):
        where = f"{archive}:{member}"
        try:
            img = decode(read_member(zf, member), where)
            if annotated and annotated[0] is not None and tuple(annotated[0]) != img.size:
                width, height = annotated[0]
                raise PipelineError(
                    f"{where}: image is {img.width}x{img.height}, but its CSV row says {width}x{height}; "
                    "its ROI would crop the wrong place"
                )
            rgb[i] = crop_and_resize(img, size, roi, where)
        except PipelineError as exc:
            if not skip_bad:
                raise
            bad.append((i, str(exc)))
    out = enhance_batch(rgb, mode)  # the whole chunk at once (CLAHE is vectorised over images)
    out[[i for i, _ in bad]] = 0  # a bad image's row is dropped later; zeros, as it always was
    return out, bad


def prepare_split(
    split: Split,
    size: int,
    mode: str,
    roi_crop: bool,
    desc: str,
    skip_bad: bool,
    workers: int | None = None,
    chunk: int = 256,
) -> tuple[np.ndarray, dict[int, str]]:
    """All images of a split as one (n, size, size, c) float32 array, in CSV order, on all cores.

    Also returns {index: reason} of the images that failed (always empty unless `skip_bad`).
    """
    channels = colour_mode(mode).channels
    rois = [tuple(int(v) for v in r) if roi_crop else None for r in split.rois]
    sizes = [tuple(int(v) for v in s) if roi_crop else None for s in split.sizes]
    items = list(zip(split.members, rois, sizes))
    chunks = [items[i : i + chunk] for i in range(0, len(items), chunk)]
    work = partial(_prepare_chunk, str(split.archive), size=size, mode=mode, skip_bad=skip_bad)
    out = np.empty((len(items), size, size, channels), dtype=np.float32)
    failed: dict[int, str] = {}
    with (
        worker_pool(workers) as pool,
        tqdm(total=len(items), desc=desc, unit="img", disable=None) as bar,
    ):
        start = 0
        for block, bad in pool.map(work, chunks):
            out[start : start + len(block)] = block
            failed.update((start + i, reason) for i, reason in bad)
            start += len(block)
            bar.update(len(block))
    return out, failed
