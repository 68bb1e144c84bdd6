"""Image preparation: FIDLE's operations, our faster decode/resize, and clear errors."""

import io

import numpy as np
import pytest
from PIL import Image
from skimage import color, exposure

from trafficsigns.core.errors import PipelineError
from trafficsigns.data.colour_modes import CHANNELS
from trafficsigns.data.images import crop_and_resize, decode, enhance, prepare_image


def ppm_bytes(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PPM")
    return buf.getvalue()


@pytest.fixture
def photo():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    img[10:30, 12:38] = (200, 30, 30)  # the "sign"
    return img


@pytest.mark.parametrize("mode", list(CHANNELS))
def test_every_mode_gives_float32_in_unit_range(photo, mode):
    out = prepare_image(ppm_bytes(photo), "x.ppm", size=24, mode=mode)
    assert out.shape == (24, 24, CHANNELS[mode]) and out.dtype == np.float32
    assert 0.0 <= out.min() and out.max() <= 1.0


def test_roi_crop_keeps_only_the_sign(photo):
    img = Image.fromarray(photo)
    cropped = crop_and_resize(img, 8, roi=(12, 10, 37, 29))  # inclusive corners
    assert np.allclose(cropped, np.array([200, 30, 30]) / 255, atol=1 / 255)
    whole = crop_and_resize(img, 8, roi=None)
    assert not np.allclose(whole, cropped, atol=0.05)


@pytest.mark.parametrize("roi", [(-5, -5, 500, 500), (0, 0, 50, 10), (100, 100, 120, 120), (5, 5, 4, 9)])
def test_roi_not_inside_the_image_is_refused(photo, roi):
    """Clipping it (or ignoring it, as the whole-image fallback did) would classify something else, silently."""
    with pytest.raises(PipelineError, match=r"x\.ppm: ROI .* is not inside the 50x40 image"):
        crop_and_resize(Image.fromarray(photo), 8, roi=roi, where="x.ppm")


def test_modes_are_fidles_skimage_operations(photo):
    rgb = photo[:24, :24].astype(np.float32) / 255
    assert np.allclose(enhance(rgb, "L")[..., 0], color.rgb2gray(rgb), atol=1e-6)
    assert np.allclose(enhance(rgb, "L-HE")[..., 0], exposure.equalize_hist(color.rgb2gray(rgb)), atol=1e-6)
    assert np.allclose(enhance(rgb, "L-CLAHE")[..., 0], exposure.equalize_adapthist(color.rgb2gray(rgb)), atol=1e-6)
    hsv = color.rgb2hsv(rgb)
    hsv[..., 2] = exposure.equalize_hist(hsv[..., 2])
    assert np.allclose(enhance(rgb, "RGB-HE"), np.clip(color.hsv2rgb(hsv), 0, 1), atol=1e-6)


@pytest.mark.parametrize("data", [b"", b"P6\n", b"P6\n40 40\n255\n" + b"\0" * 100, b"GIF89a garbage"])
def test_undecodable_image_names_the_file(data):
    with pytest.raises(PipelineError, match=r"archive.zip:img/00001.ppm: image does not decode"):
        prepare_image(data, "archive.zip:img/00001.ppm", size=24, mode="L")


def test_unknown_mode_is_refused(photo):
    with pytest.raises(PipelineError, match="unknown colour mode 'HSV'"):
        enhance(photo.astype(np.float32) / 255, "HSV")


def _saved(array: np.ndarray, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt, **kwargs)
    return buf.getvalue()


GREY_156 = 156 * 257  # 156/255 in 16 bits


@pytest.mark.parametrize(
    "data",
    [
        b"P5\n2 1\n65535\n" + np.full(2, GREY_156, ">u2").tobytes(),  # 16-bit PGM
        b"P5\n2 1\n1000\n" + np.full(2, round(156 / 255 * 1000), ">u2").tobytes(),  # PGM, maxval 1000
        b"P6\n2 1\n65535\n" + np.full(6, GREY_156, ">u2").tobytes(),  # 16-bit PPM (was right already)
        _saved(np.full((1, 2), GREY_156, np.uint16), "PNG"),  # 16-bit grey PNG
        _saved(np.full((1, 2), GREY_156, np.uint16), "TIFF"),
        _saved(np.full((1, 2), 156 / 255, np.float32), "TIFF"),  # float grey in 0..1
    ],
    ids=["pgm16", "pgm1000", "ppm16", "png16", "tiff16", "tiff-float"],
)
def test_wide_images_are_read_at_their_real_bit_depth(data):
    """Pillow's convert('RGB') clips 16-bit grey to 255 (white); decode scales it from its own range."""
    assert np.abs(np.asarray(decode(data, "x")).astype(int) - 156).max() <= 1


@pytest.mark.parametrize(
    "array", [np.full((1, 2), 2.5, np.float32), np.full((1, 2), np.nan, np.float32), np.full((1, 2), 70000, np.int32)]
)
def test_wide_images_of_unknown_range_are_refused(array):
    with pytest.raises(PipelineError, match=r"x\.tif: .* image with values .* its intended range is unknown"):
        decode(_saved(array, "TIFF"), "x.tif")


def test_exif_orientation_is_applied():
    """A phone photo stored sideways with Orientation 6 (turn 90° clockwise) is classified upright."""
    upright = np.zeros((20, 10, 3), np.uint8)
    upright[:5] = 255  # white at the top
    stored = np.ascontiguousarray(np.rot90(upright, 1))  # as the camera wrote it: 10 high, 20 wide
    exif = Image.Exif()
    exif[0x0112] = 6
    img = np.asarray(decode(_saved(stored, "JPEG", exif=exif, quality=95), "x.jpg"))
    assert img.shape == (20, 10, 3) and img[:5].mean() > 200 and img[-5:].mean() < 50


@pytest.mark.filterwarnings("ignore")  # Pillow warns about the damaged tags it skips
@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "TIFF", "GIF", "WEBP"])
def test_damaged_images_decode_or_fail_with_one_clear_error(photo, fmt):
    """Seeded byte flips and cuts in real files (EXIF included): an image or a PipelineError, nothing else."""
    exif = Image.Exif()
    exif[0x0112] = 6
    good = _saved(photo, fmt, **({"exif": exif} if fmt in ("JPEG", "PNG", "WEBP") else {}))
    rng = np.random.default_rng(0)
    for _ in range(150):
        data = bytearray(good)
        for at in rng.integers(0, len(data), rng.integers(1, 6)):
            data[at] = rng.integers(0, 256)
        data = bytes(data[: rng.integers(len(data) // 2, len(data) + 1)])
        try:
            decode(data, "x")
        except PipelineError as exc:
            assert str(exc).startswith("x: ") and "\n" not in str(exc)
