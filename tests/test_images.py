"""Image preparation: FIDLE's operations, our faster decode/resize, and clear errors."""

import io

import numpy as np
import pytest
from PIL import Image
from skimage import color, exposure

from trafficsigns.core.errors import PipelineError
from trafficsigns.data.colour_modes import CHANNELS
from trafficsigns.data.images import crop_and_resize, enhance, prepare_image


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


def test_roi_outside_image_is_clipped(photo):
    out = crop_and_resize(Image.fromarray(photo), 8, roi=(-5, -5, 500, 500))
    assert np.array_equal(out, crop_and_resize(Image.fromarray(photo), 8, roi=None))


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
