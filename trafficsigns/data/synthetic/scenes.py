"""Tracks: one physical sign in one scene, filmed while the car approaches (frames as PPM bytes + ROI)."""

from __future__ import annotations

import io
import math
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from trafficsigns.data.synthetic.pictograms import BLACK, GRID, WHITE, sign_canvas

_SCENE_RES = 96  # scene pixels per nominal sign size: the scene is drawn in sign units
_SKY = ((135, 175, 225), (200, 210, 225), (232, 235, 240), (170, 175, 185), (110, 150, 210))
_FOLIAGE = ((50, 90, 40), (75, 115, 50), (35, 60, 30), (110, 125, 60), (90, 100, 70))
_BUILT = ((150, 140, 130), (120, 120, 125), (170, 150, 125), (90, 80, 75), (140, 75, 60), (200, 195, 185))
_GROUND = ((90, 90, 95), (105, 100, 85), (70, 75, 70))
_VIVID = ((180, 30, 30), (30, 70, 160), (220, 180, 30), (240, 240, 240))  # cars, ads, other signs


class Job(NamedTuple):
    seed: int
    cid: int
    track: int
    frames: int
    min_size: int
    max_size: int


class Frame(NamedTuple):
    ppm: bytes
    fields: tuple[int, int, int, int, int, int]  # Width, Height, Roi.X1, Roi.Y1, Roi.X2, Roi.Y2


class _Look(NamedTuple):
    """Per-track camera, lighting and pose: fixed for the physical sign, jittered per frame."""

    gain: float  # exposure
    cast: np.ndarray  # RGB white-balance error
    haze: float  # blend towards haze_rgb (fog, glare on the windscreen)
    haze_rgb: np.ndarray
    noise: float  # sensor noise sigma
    fade_in: float  # log-exposure change from the first to the last frame (shade, auto-exposure)
    gamma_lut: np.ndarray  # 1024-entry tone curve
    blur: float  # defocus sigma (px) ...
    blur_per_px: float  # ... plus this much per px of sign size
    motion_p: float  # probability that a frame is motion-blurred
    motion_angle: float  # its direction (radians, ~horizontal)
    jpeg: int  # JPEG quality the camera stored at (0: none)
    yaw: float  # pose (radians) ...
    pitch: float
    roll: float
    depth: float  # ... and perspective strength
    drift: np.ndarray  # background parallax over the track, in sign units


def _pick(rng: np.random.Generator, palette: tuple) -> tuple[int, ...]:
    return palette[rng.integers(len(palette))]


def _smooth_noise(rng: np.random.Generator, size: tuple[int, int], cells: int) -> np.ndarray:
    """Smooth random field in [0, 1] of PIL size (w, h): upsampled coarse noise."""
    coarse = Image.fromarray((rng.random((cells, cells)) * 255).astype(np.uint8))
    return np.asarray(coarse.resize(size, Image.Resampling.BICUBIC), dtype=np.float32) / 255


def _weathered_sign(cid: int, rng: np.random.Generator) -> Image.Image:
    """This physical sign: stroke weight, faded/tinted paint, dirt, its own sun/shadow shading."""
    sign = sign_canvas(cid)
    w, h = sign.size
    # sign generations differ in stroke weight: dark strokes ~1/2 px bolder or lighter (filtered
    # on white or black so the transparent surround can't bleed in)
    weight = rng.integers(-1, 2)
    if weight:
        ground = Image.new("RGBA", sign.size, WHITE if weight > 0 else BLACK)
        flat = Image.alpha_composite(ground, sign).convert("RGB")
        spread = ImageFilter.MinFilter(3) if weight > 0 else ImageFilter.MaxFilter(3)
        grown = Image.blend(flat, flat.filter(spread), 0.5)
        sign = Image.merge("RGBA", (*grown.split(), sign.getchannel("A")))
    pic = np.asarray(sign, dtype=np.float32) / 255
    rgb = pic[..., :3]
    lum = (0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2])[..., None]
    rgb = lum + rng.uniform(0.8, 1.0) * (rgb - lum)
    rgb = rgb + rng.uniform(0, 0.15) ** 1.5 * (0.92 - rgb)
    rgb = rgb * rng.uniform(0.9, 1.06, 3).astype(np.float32)
    rgb = rgb * (1 - rng.uniform(0, 0.15) * _smooth_noise(rng, (w, h), 5))[..., None]
    a = rng.uniform(0, 2 * math.pi)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    ramp = ((xs / w - 0.5) * math.cos(a) + (ys / h - 0.5) * math.sin(a))[..., None]
    rgb = rgb * (rng.uniform(0.85, 1.1) * (1 + rng.uniform(0, 0.25) * ramp))
    if rng.random() < 0.1:  # specular glare on the retro-reflective film
        gx, gy, gr = rng.uniform(0.2, 0.8) * w, rng.uniform(0.2, 0.8) * h, rng.uniform(0.15, 0.4) * w
        glare = np.exp(-((xs - gx) ** 2 + (ys - gy) ** 2) / (2 * gr * gr))[..., None]
        rgb = rgb + rng.uniform(0.15, 0.45) * glare * (1 - rgb)
    out = np.concatenate([np.clip(rgb, 0, 1), pic[..., 3:]], axis=-1)
    return Image.fromarray((out * 255 + 0.5).astype(np.uint8), "RGBA")


def _scene(rng: np.random.Generator, n: int, sign_h: float) -> tuple[Image.Image, Image.Image | None]:
    """Background (RGB) and optional occluding foreground (RGBA), both n x n, sign centred."""
    top, bottom = _pick(rng, _SKY + _BUILT + _FOLIAGE), _pick(rng, _GROUND + _FOLIAGE + _BUILT)
    t = np.clip((np.arange(n) - rng.uniform(0.3, 1.1) * n) / (rng.uniform(0.05, 0.4) * n) + 0.5, 0, 1)
    grad = np.array(top)[None] + t[:, None] * (np.array(bottom) - np.array(top))[None]
    img = Image.fromarray(np.repeat(grad[:, None], n, axis=1).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(rng.integers(2, 10)):  # trees, buildings, sky patches as soft blobs
        palette = (_FOLIAGE, _BUILT, _SKY, _VIVID)[rng.choice(4, p=[0.45, 0.3, 0.17, 0.08])]
        (x, y), (rx, ry) = rng.uniform(-0.2, 1.2, 2) * n, rng.uniform(0.05, 0.5, 2) * n
        draw.ellipse([x - rx, y - ry, x + rx, y + ry], fill=_pick(rng, palette))
    img = img.filter(ImageFilter.GaussianBlur(rng.uniform(1.5, 6)))
    draw = ImageDraw.Draw(img)
    for _ in range(rng.integers(0, 6)):  # crisp edges: facades, windows, poles, vehicles
        x0, y0 = rng.uniform(-0.2, 1.0, 2) * n
        w, h = rng.uniform(0.03, 0.6, 2) * n
        palette = _BUILT + _VIVID if rng.random() < 0.2 else _BUILT
        draw.rectangle([x0, y0, x0 + w, y0 + h], fill=_pick(rng, palette))
    for _ in range(rng.integers(0, 4)):  # branches, wires
        draw.line(
            [tuple(rng.uniform(0, n, 2)), tuple(rng.uniform(0, n, 2))], fill=(40, 40, 35), width=int(rng.integers(1, 4))
        )
    arr = np.asarray(img, dtype=np.float32)
    texture = rng.uniform(0.05, 0.3) * (_smooth_noise(rng, (n, n), 12) - 0.5)
    texture += rng.uniform(0, 0.15) * (_smooth_noise(rng, (n, n), 48) - 0.5)
    img = Image.fromarray(np.clip(arr * (1 + texture[..., None]), 0, 255).astype(np.uint8))
    img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0, 2.5)))  # depth of field behind the sign
    _post_and_plate(ImageDraw.Draw(img), rng, n, sign_h)
    return img, _occluder(rng, n) if rng.random() < 0.05 else None


def _post_and_plate(draw: ImageDraw.ImageDraw, rng: np.random.Generator, n: int, sign_h: float) -> None:
    c, r = n / 2, _SCENE_RES
    if rng.random() < 0.75:
        shade = int(rng.integers(90, 190))
        draw.rectangle([c - 0.035 * r, c, c + 0.035 * r, n], fill=(shade, shade, shade + 5))
    if rng.random() < 0.2:  # supplementary plate under the sign
        y0 = c + (sign_h / 2 + rng.uniform(0.03, 0.1)) * r
        draw.rectangle(
            [c - 0.42 * r, y0, c + 0.42 * r, y0 + 0.3 * r],
            fill=(235, 235, 230),
            outline=(30, 30, 30),
            width=max(1, round(0.02 * r)),
        )


def _occluder(rng: np.random.Generator, n: int) -> Image.Image:
    """Foliage covering one side of the sign, in front of it."""
    layer = Image.new("RGBA", (n, n), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    a, dist = rng.uniform(0, 2 * math.pi), rng.uniform(0.55, 0.8) * _SCENE_RES
    cx, cy = n / 2 + dist * math.cos(a), n / 2 + dist * math.sin(a)
    for _ in range(rng.integers(6, 14)):
        x, y = cx + rng.normal(0, 0.15) * _SCENE_RES, cy + rng.normal(0, 0.15) * _SCENE_RES
        rx, ry = rng.uniform(0.05, 0.16, 2) * _SCENE_RES
        draw.ellipse([x - rx, y - ry, x + rx, y + ry], fill=_pick(rng, _FOLIAGE) + (255,))
    return layer.filter(ImageFilter.GaussianBlur(1))


def _look(rng: np.random.Generator) -> _Look:
    """Sample one track's camera: GTSRB has some very dark, some blown-out, some hazy tracks."""
    mode = rng.random()
    gain = rng.uniform(0.35, 0.6) if mode < 0.08 else rng.uniform(1.3, 1.6) if mode < 0.12 else rng.uniform(0.75, 1.2)
    gamma = rng.uniform(0.85, 1.3) if gain < 1.3 else 0.9  # no extra lift on overexposed tracks
    # a lookup table from Python floats: no vectorised pow whose last bits could vary by CPU
    lut = np.array([round(255 * (i / 1023) ** (1 / gamma)) for i in range(1024)], dtype=np.uint8)
    haze = rng.uniform(0, 0.25) if rng.random() < 0.2 and gain < 1.3 else 0.0
    return _Look(
        gain=gain,
        cast=1 + rng.uniform(-0.12, 0.12, 3),
        haze=haze,
        haze_rgb=rng.uniform(0.55, 0.85) * np.array([0.95, 1.0, 1.05]),
        gamma_lut=lut,
        noise=rng.uniform(0.005, 0.025) * (1.5 if mode < 0.08 else 1.0),
        fade_in=rng.uniform(-0.7, 0.7),
        blur=rng.uniform(0.0, 0.3),
        blur_per_px=rng.uniform(0, 0.005),
        motion_p=rng.uniform(0, 0.2),
        motion_angle=rng.normal(0, 0.35),
        jpeg=int(rng.integers(40, 90)) if rng.random() < 0.4 else 0,
        yaw=float(np.clip(rng.normal(0, 0.2), -0.5, 0.5)),
        pitch=rng.normal(0, 0.08),
        roll=rng.normal(0, 0.05),
        depth=rng.uniform(0.05, 0.3),
        drift=rng.uniform(-0.3, 0.3, 2),
    )


def _track_sizes(rng: np.random.Generator, job: Job) -> np.ndarray:
    """Nominal sign size per frame: apparent size ~ 1/distance, distance shrinking linearly."""
    far_lo = min(job.min_size * 1.5, job.max_size)
    near = float(np.clip(math.exp(rng.normal(math.log(55), 0.4)), far_lo, job.max_size))
    far = max(job.min_size, near * rng.uniform(0.3, 0.65))
    return 1 / np.linspace(1 / far, 1 / near, job.frames)


def _sign_corners(w: float, h: float, look: _Look, t: float, rng: np.random.Generator) -> np.ndarray:
    """Corners (TL, TR, BR, BL) of a w x h sign under the camera pose, in sign units, centred."""
    pts = np.array([[-w, -h], [w, -h], [w, h], [-w, h]]) / 2
    yaw = look.yaw * (0.7 + 0.6 * t) + rng.normal(0, 0.04)  # roadside signs turn oblique up close
    pitch, roll = look.pitch + rng.normal(0, 0.02), look.roll + rng.normal(0, 0.03)
    z = pts[:, 0] * math.sin(yaw) + pts[:, 1] * math.sin(pitch)
    pts = pts * np.array([math.cos(yaw), math.cos(pitch)]) / (1 + look.depth * z)[:, None]
    # elementwise, not a BLAS matmul, so no CPU-specific kernel can change a bit
    x, y = pts[:, 0], pts[:, 1]
    return np.stack([x * math.cos(roll) - y * math.sin(roll), x * math.sin(roll) + y * math.cos(roll)], axis=1)


def _perspective_coeffs(dst: np.ndarray, src: np.ndarray) -> tuple[float, ...]:
    """PIL PERSPECTIVE data mapping output points `dst` onto input points `src`."""
    rows, rhs = [], []
    for (x, y), (u, v) in zip(dst, src):
        rows += [[x, y, 1, 0, 0, 0, -u * x, -u * y], [0, 0, 0, x, y, 1, -v * x, -v * y]]
        rhs += [u, v]
    # rounded so last-bit differences between LAPACK builds can't change a pixel
    return tuple(np.round(np.linalg.solve(np.array(rows), np.array(rhs)), 10))


def _motion_blur(arr: np.ndarray, length: float, angle: float) -> np.ndarray:
    """Average of copies shifted along a line of `length` px (camera moving during exposure)."""
    n = max(2, math.ceil(length) + 1)
    offs = [
        ((i / (n - 1) - 0.5) * length * math.cos(angle), (i / (n - 1) - 0.5) * length * math.sin(angle))
        for i in range(n)
    ]
    p = math.ceil(length / 2) + 1
    padded = np.pad(arr, ((p, p), (p, p), (0, 0)), mode="edge")
    h, w = arr.shape[:2]
    acc = np.zeros_like(arr)
    for dx, dy in offs:
        x, y = p + round(dx), p + round(dy)
        acc += padded[y : y + h, x : x + w]
    return acc / n


def _frame(
    sign: Image.Image,
    scene: Image.Image,
    front: Image.Image | None,
    look: _Look,
    size: float,
    t: float,
    rng: np.random.Generator,
    job: Job,
) -> Frame:
    sw, sh = sign.size
    corners = _sign_corners(sw / GRID, sh / GRID, look, t, rng) * size
    extent = corners.max(0) - corners.min(0)
    shrink = min(1.0, job.max_size / extent.max())  # the ROI never exceeds max_size
    size, corners, extent = size * shrink, corners * shrink, extent * shrink
    margin = max(5, round(0.1 * extent.max()))  # GTSRB: 10 % border, at least 5 px
    m = margin + rng.integers(0, 2, 4)  # left, top, right, bottom
    dst = corners - corners.min(0) + m[:2]
    span = np.ceil(extent - 1e-6).astype(int)  # the rescaled max_size side must not round up past it
    width = max(job.min_size, int(span[0] + m[0] + m[2]))
    height = max(job.min_size, int(span[1] + m[1] + m[3]))

    small = sign.resize((max(1, round(sw * size / GRID)), max(1, round(sh * size / GRID))), Image.Resampling.LANCZOS)
    src = np.array([[0, 0], [small.width, 0], [small.width, small.height], [0, small.height]], float)
    layer = small.transform(
        (width, height), Image.Transform.PERSPECTIVE, _perspective_coeffs(dst, src), Image.Resampling.BILINEAR
    )

    scale, centre = _SCENE_RES / size, dst.mean(0)
    sx, sy = scene.width / 2 + look.drift * t * _SCENE_RES
    box = (
        sx - centre[0] * scale,
        sy - centre[1] * scale,
        sx + (width - centre[0]) * scale,
        sy + (height - centre[1]) * scale,
    )
    img = Image.alpha_composite(scene.resize((width, height), Image.Resampling.BILINEAR, box).convert("RGBA"), layer)
    if front is not None:
        img = Image.alpha_composite(img, front.resize((width, height), Image.Resampling.BILINEAR, box))
    img = img.convert("RGB").filter(
        ImageFilter.GaussianBlur(float(look.blur + look.blur_per_px * size + rng.uniform(0, 0.2)))
    )

    x = np.asarray(img, dtype=np.float32) / 255
    if rng.random() < look.motion_p:
        x = _motion_blur(x, rng.uniform(1, 1 + 0.04 * size), look.motion_angle + rng.normal(0, 0.2))
    # the light changes along the track (shade, auto-exposure) and a little from frame to frame
    gain = min(1.6, look.gain * math.exp(look.fade_in * (t - 0.5) + rng.normal(0, 0.18)))
    x = x * (gain * look.cast).astype(np.float32)
    x = x + look.haze * (look.haze_rgb.astype(np.float32) - x)
    x = x + rng.normal(0, look.noise * rng.uniform(0.5, 1.5), x.shape).astype(np.float32) * np.sqrt(x + 0.05)
    img = Image.fromarray(look.gamma_lut[(np.clip(x, 0, 1) * 1023 + 0.5).astype(np.intp)])
    if look.jpeg:
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=look.jpeg)
        img = Image.open(buf).convert("RGB")

    alpha = np.asarray(layer.getchannel("A")) >= 128
    cols, rows = np.flatnonzero(alpha.any(0)), np.flatnonzero(alpha.any(1))
    buf = io.BytesIO()
    img.save(buf, "PPM")
    return Frame(buf.getvalue(), (width, height, int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[-1])))


def render_track(job: Job) -> list[Frame]:
    """All frames of one track; its own RNG makes the result independent of scheduling."""
    rng = np.random.default_rng([job.seed, job.cid, job.track])
    sign = _weathered_sign(job.cid, rng)
    # the scene must cover the widest margin (5 px around the smallest sign) plus the drift
    n = 2 * math.ceil(_SCENE_RES * (1.05 + 8 / job.min_size))
    scene, front = _scene(rng, n, sign.height / GRID)
    look = _look(rng)
    sizes = _track_sizes(rng, job)
    return [_frame(sign, scene, front, look, s, i / max(1, job.frames - 1), rng, job) for i, s in enumerate(sizes)]
