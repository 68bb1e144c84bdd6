"""Offline, deterministic synthetic GTSRB, written in exactly the official archive format.

The pipeline's default data source: it lets download -> prepare -> train -> evaluate run without
internet. Each of the 43 classes is drawn once as a clean pictogram (`draw_pictogram`); a *track* is
one physical sign (its own paint, fading, dirt, background scene, lighting and camera tilt) filmed
as a car approaches, so the sign grows over the track's frames as in the real GTSRB. Frames get
per-frame camera nuisances (jitter, defocus/motion blur, exposure drift, sensor noise, JPEG).

Everything random comes from `numpy.random.default_rng([seed, cid, track])`, so the archives are
byte-identical for the same arguments whatever the worker count (with the same pinned libraries).
"""
from __future__ import annotations

import csv
import hashlib
import io
import math
import os
import zipfile
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from functools import lru_cache
from itertools import groupby, islice
from multiprocessing import get_context
from pathlib import Path
from typing import Callable, Iterable, Iterator, NamedTuple

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont
from tqdm import tqdm

from .archives import CSV_COLUMNS, TEST_DIR, TEST_GT_CSV, TEST_GT_ZIP, TEST_ZIP, TRAIN_DIR, TRAIN_ZIP
from .classes import MIRROR_PAIRS, NUM_GTSRB_CLASSES  # class b of a pair is drawn as the mirror of a
from .errors import PipelineError
from .fsutil import atomic_path


# Images per class in the real GTSRB training set (ClassId 0..42): sets the class frequencies.
REAL_TRAIN_COUNTS = (
    210, 2220, 2250, 1410, 1980, 1860, 420, 1440, 1410, 1470, 2010, 1320, 2100, 2160, 780, 630,
    420, 1110, 1200, 210, 360, 330, 390, 510, 270, 1500, 600, 240, 540, 270, 450, 780, 240, 689,
    420, 1200, 390, 210, 2070, 300, 360, 240, 240,
)

_HEADER = list(CSV_COLUMNS)
_ZIP_DATE = (2011, 1, 1, 0, 0, 0)
_TEST_SHUFFLE_KEY = 1000  # [seed, 1000] can't collide with the per-track keys [seed, cid<43, track]

# --------------------------------------------------------------------------------------------
# Pictograms: drawn on a 128-unit design grid, supersampled 4x, then downscaled.

_GRID = 128
_SS = 4
RED, WHITE, BLACK = (200, 18, 38), (246, 246, 242), (24, 24, 24)
BLUE, YELLOW = (16, 76, 168), (250, 192, 0)
_Pt = tuple[float, float]


@lru_cache(maxsize=1)
def _font() -> ImageFont.FreeTypeFont:
    # Pillow's bundled font (no system fonts) keeps the drawing identical on every machine.
    return ImageFont.load_default(size=200)


def _regular(n: int, r: float, cx: float, cy: float, rot: float) -> list[_Pt]:
    """Vertices of a regular n-gon (circumradius r, first vertex at angle `rot` degrees)."""
    return [(cx + r * math.cos(math.radians(rot + 360 * i / n)),
             cy + r * math.sin(math.radians(rot + 360 * i / n))) for i in range(n)]


def _arc(cx: float, cy: float, r: float, a0: float, a1: float, n: int = 24) -> list[_Pt]:
    return [(cx + r * math.cos(math.radians(a0 + (a1 - a0) * i / n)),
             cy + r * math.sin(math.radians(a0 + (a1 - a0) * i / n))) for i in range(n + 1)]


def _bezier(*ctrl: _Pt, n: int = 24) -> list[_Pt]:
    """Points on the Bezier curve with these control points (de Casteljau)."""
    out = []
    for i in range(n + 1):
        t, pts = i / n, list(ctrl)
        while len(pts) > 1:
            pts = [(a[0] + t * (b[0] - a[0]), a[1] + t * (b[1] - a[1])) for a, b in zip(pts, pts[1:])]
        out.append(pts[0])
    return out


class _Pen:
    """Draws in design-grid units onto a supersampled transparent RGBA canvas."""

    def __init__(self) -> None:
        self.img = Image.new("RGBA", (_GRID * _SS,) * 2, (0, 0, 0, 0))
        self.draw = ImageDraw.Draw(self.img)

    @staticmethod
    def _s(pts: Iterable[_Pt]) -> list[_Pt]:
        return [(x * _SS, y * _SS) for x, y in pts]

    def disc(self, r: float, fill, cx: float = 64, cy: float = 64) -> None:
        self.draw.ellipse([(cx - r) * _SS, (cy - r) * _SS, (cx + r) * _SS, (cy + r) * _SS], fill=fill)

    def ring(self, r: float, width: float, fill, cx: float = 64, cy: float = 64) -> None:
        self.draw.ellipse([(cx - r) * _SS, (cy - r) * _SS, (cx + r) * _SS, (cy + r) * _SS],
                          outline=fill, width=round(width * _SS))

    def poly(self, pts: list[_Pt], fill) -> None:
        self.draw.polygon(self._s(pts), fill=fill)

    def line(self, pts: list[_Pt], fill, width: float, caps: bool = True) -> None:
        self.draw.line(self._s(pts), fill=fill, width=round(width * _SS), joint="curve")
        if caps:
            for x, y in (pts[0], pts[-1]):
                self.disc(width / 2, fill, x, y)

    def rounded(self, n: int, r: float, fill, corner: float, cx: float = 64, cy: float = 64,
                rot: float = -90) -> None:
        """Regular polygon with rounded corners: the polygon inset by `corner`, dilated back."""
        pts = _regular(n, r - corner / math.cos(math.pi / n), cx, cy, rot)
        self.poly(pts, fill)
        self.line(pts + pts[:1], fill, 2 * corner)
        for x, y in pts:
            self.disc(corner, fill, x, y)

    def arrow(self, pts: list[_Pt], fill, width: float, head_len: float, head_w: float) -> None:
        """A shaft along `pts` ending in a triangular head beyond the last point."""
        self.line(pts, fill, width, caps=False)
        (x0, y0), (x1, y1) = pts[-2], pts[-1]
        d = math.hypot(x1 - x0, y1 - y0)
        ux, uy = (x1 - x0) / d, (y1 - y0) / d
        self.poly([(x1 + ux * head_len, y1 + uy * head_len), (x1 - uy * head_w / 2, y1 + ux * head_w / 2),
                   (x1 - ux, y1 - uy), (x1 + uy * head_w / 2, y1 - ux * head_w / 2)], fill)

    def text(self, s: str, cx: float, cy: float, w: float, h: float, fill) -> None:
        """`s` stretched to exactly w x h units (condensed like the DIN digits of real signs)."""
        # a stroke makes the regular face as bold as sign lettering, which must read from afar
        left, top, right, bottom = _font().getbbox(s, stroke_width=4)
        mask = Image.new("L", (right - left, bottom - top))
        ImageDraw.Draw(mask).text((-left, -top), s, font=_font(), fill=255, stroke_width=4, stroke_fill=255)
        mask = mask.resize((round(w * _SS), round(h * _SS)), Image.Resampling.LANCZOS)
        self.img.paste(Image.new("RGBA", mask.size, fill), (round((cx - w / 2) * _SS), round((cy - h / 2) * _SS)),
                       mask)


# --- sign bodies ------------------------------------------------------------------------------

def _prohibition(p: _Pen) -> None:
    p.disc(64, WHITE)
    p.disc(62, RED)
    p.disc(48, WHITE)


def _end_disc(p: _Pen) -> None:
    p.disc(64, (70, 70, 70))
    p.disc(62.5, WHITE)


def _end_bars(p: _Pen) -> None:
    """The five thin black diagonal bars (upper right to lower left) of the 'end of' signs."""
    for off in (-10, -5, 0, 5, 10):
        half = math.sqrt(61 ** 2 - off ** 2)
        cx, cy = 64 + off / math.sqrt(2), 64 + off / math.sqrt(2)
        d = half / math.sqrt(2)
        p.line([(cx + d, cy - d), (cx - d, cy + d)], BLACK, 2.4, caps=False)


def _mandatory(p: _Pen) -> None:
    p.disc(64, WHITE)
    p.disc(62, BLUE)


_TRI_R = 71.5  # warning triangle circumradius: 124 units wide, centred vertically on the grid


def _warning(p: _Pen) -> None:
    cy = 64 + _TRI_R / 4
    p.rounded(3, _TRI_R, WHITE, 8, cy=cy)
    p.rounded(3, _TRI_R - 3, RED, 7, cy=cy)
    p.rounded(3, _TRI_R - 3 - 2 * 11, WHITE, 3, cy=cy)


# --- symbols ----------------------------------------------------------------------------------

def _car_rear(p: _Pen, cx: float, cy: float, w: float, fill) -> None:
    """A car seen from behind (the no-passing signs): cabin with window, body, two wheels."""
    p.poly([(cx - 0.33 * w, cy - 0.55 * w), (cx + 0.33 * w, cy - 0.55 * w),
            (cx + 0.44 * w, cy - 0.1 * w), (cx - 0.44 * w, cy - 0.1 * w)], fill)
    p.poly([(cx - 0.25 * w, cy - 0.46 * w), (cx + 0.25 * w, cy - 0.46 * w),
            (cx + 0.33 * w, cy - 0.16 * w), (cx - 0.33 * w, cy - 0.16 * w)], WHITE)
    p.draw.rounded_rectangle(p._s([(cx - 0.5 * w, cy - 0.14 * w), (cx + 0.5 * w, cy + 0.3 * w)]),
                             radius=0.08 * w * _SS, fill=fill)
    for sx in (-1, 1):
        p.draw.rectangle(p._s([(cx + sx * 0.46 * w - 0.1 * w, cy + 0.28 * w),
                               (cx + sx * 0.46 * w + 0.1 * w, cy + 0.48 * w)]), fill=fill)


def _truck_rear(p: _Pen, cx: float, cy: float, w: float, fill) -> None:
    """A lorry from behind: a tall solid box with a door seam, clearly bigger than the car."""
    p.draw.rectangle(p._s([(cx - 0.55 * w, cy - 0.95 * w), (cx + 0.55 * w, cy + 0.3 * w)]), fill=fill)
    p.draw.rectangle(p._s([(cx - 0.03 * w, cy - 0.85 * w), (cx + 0.03 * w, cy + 0.1 * w)]), fill=WHITE)
    for sx in (-1, 1):
        p.draw.rectangle(p._s([(cx + sx * 0.4 * w - 0.12 * w, cy + 0.28 * w),
                               (cx + sx * 0.4 * w + 0.12 * w, cy + 0.5 * w)]), fill=fill)


def _truck_side(p: _Pen, fill) -> None:
    """A lorry seen from the side, cab on the left (sign 'vehicles over 3.5 t prohibited')."""
    p.draw.rounded_rectangle(p._s([(24, 58), (44, 84)]), radius=3 * _SS, fill=fill)
    p.poly([(27, 61), (38, 61), (38, 71), (27, 71)], WHITE)
    p.draw.rectangle(p._s([(46, 46), (104, 84)]), fill=fill)
    p.draw.rectangle(p._s([(24, 80), (104, 86)]), fill=fill)
    for x in (36, 78, 94):
        p.disc(7.5, fill, x, 88)
        p.disc(3, WHITE, x, 88)


def _person(p: _Pen, x: float, feet: float, h: float, fill) -> None:
    """A striding figure facing left, `h` units tall, as bold as real sign pictograms."""
    hip, shoulder = (x + 0.02 * h, feet - 0.45 * h), (x + 0.05 * h, feet - 0.76 * h)
    p.disc(0.11 * h, fill, x + 0.07 * h, feet - 0.9 * h)
    p.line([shoulder, hip], fill, 0.2 * h)
    p.line([hip, (x - 0.26 * h, feet)], fill, 0.14 * h)
    p.line([hip, (x + 0.12 * h, feet - 0.22 * h), (x + 0.28 * h, feet - 0.02 * h)], fill, 0.14 * h)
    p.line([shoulder, (x - 0.18 * h, feet - 0.5 * h)], fill, 0.11 * h)
    p.line([shoulder, (x + 0.25 * h, feet - 0.5 * h)], fill, 0.11 * h)


def _speed(text: str) -> Callable[[_Pen], None]:
    def draw(p: _Pen) -> None:
        _prohibition(p)
        p.text(text, 64, 64, 60 if len(text) == 2 else 76, 56 if len(text) == 2 else 50, BLACK)
    return draw


def _end_80(p: _Pen) -> None:
    _end_disc(p)
    p.text("80", 64, 64, 60, 56, (80, 80, 80))
    _end_bars(p)


def _no_passing(trucks: bool) -> Callable[[_Pen], None]:
    def draw(p: _Pen) -> None:
        _prohibition(p)
        (_truck_rear if trucks else _car_rear)(p, 44, 72, 30, RED)
        _car_rear(p, 84, 72, 30, BLACK)
    return draw


def _end_no_passing(trucks: bool) -> Callable[[_Pen], None]:
    def draw(p: _Pen) -> None:
        _end_disc(p)
        (_truck_rear if trucks else _car_rear)(p, 44, 72, 30, (90, 90, 90))
        _car_rear(p, 84, 72, 30, (90, 90, 90))
        _end_bars(p)
    return draw


def _right_of_way(p: _Pen) -> None:
    _warning(p)
    p.line([(64, 52), (64, 104)], BLACK, 10, caps=False)
    p.line([(42, 84), (86, 84)], BLACK, 6, caps=False)


def _priority(p: _Pen) -> None:
    p.rounded(4, 64, (90, 90, 90), 4, rot=-90)
    p.rounded(4, 62.5, WHITE, 3.5, rot=-90)
    p.rounded(4, 46, BLACK, 1.5, rot=-90)
    p.rounded(4, 43.5, YELLOW, 1.5, rot=-90)


def _yield(p: _Pen) -> None:
    cy = 64 - _TRI_R / 4
    p.rounded(3, _TRI_R, WHITE, 8, cy=cy, rot=90)
    p.rounded(3, _TRI_R - 3, RED, 7, cy=cy, rot=90)
    p.rounded(3, _TRI_R - 3 - 2 * 14, WHITE, 3, cy=cy, rot=90)


def _stop(p: _Pen) -> None:
    p.rounded(8, 64 / math.cos(math.pi / 8), WHITE, 2, rot=22.5)
    p.rounded(8, 61 / math.cos(math.pi / 8), RED, 2, rot=22.5)
    p.text("STOP", 64, 64, 92, 32, WHITE)


def _no_vehicles(p: _Pen) -> None:
    _prohibition(p)


def _trucks_prohibited(p: _Pen) -> None:
    _prohibition(p)
    _truck_side(p, BLACK)


def _no_entry(p: _Pen) -> None:
    p.disc(64, WHITE)
    p.disc(62, RED)
    p.draw.rectangle(p._s([(24, 55), (104, 73)]), fill=WHITE)


def _warn(symbol: Callable[[_Pen], None]) -> Callable[[_Pen], None]:
    def draw(p: _Pen) -> None:
        _warning(p)
        symbol(p)
    return draw


def _caution(p: _Pen) -> None:
    p.poly([(59, 50), (69, 50), (66.5, 88), (61.5, 88)], BLACK)
    p.disc(5.5, BLACK, 64, 98)


def _curve_left(p: _Pen) -> None:
    p.arrow(_bezier((70, 106), (70, 84), (66, 74), (55, 70)), BLACK, 9, 13, 24)


def _double_curve(p: _Pen) -> None:
    p.arrow(_bezier((72, 106), (38, 94), (92, 76), (61, 63)), BLACK, 8.5, 12, 22)


def _bumpy(p: _Pen) -> None:
    top = [(x, 100 - 17 * abs(math.sin(math.pi * (x - 38) / 26))) for x in np.linspace(38, 90, 53)]
    p.poly([(32, 100)] + top + [(96, 100), (96, 105), (32, 105)], BLACK)


def _slippery(p: _Pen) -> None:
    _car_rear(p, 64, 64, 30, BLACK)
    for x0, phase in ((53, 0.0), (75, math.pi)):
        wave = [(x0 + 5 * math.sin(phase + 2 * math.pi * (y - 82) / 24), y) for y in np.linspace(82, 104, 23)]
        p.line(wave, BLACK, 5)


def _narrows_right(p: _Pen) -> None:
    p.line([(52, 106), (52, 58)], BLACK, 8)
    p.line([(80, 106), (80, 90), (70, 76), (70, 58)], BLACK, 8)


def _road_work(p: _Pen) -> None:
    p.disc(6.5, BLACK, 55, 57)
    p.line([(57, 66), (62, 83)], BLACK, 11)
    p.line([(62, 83), (52, 104)], BLACK, 7)
    p.line([(62, 83), (70, 92), (70, 104)], BLACK, 7)
    p.line([(58, 69), (76, 80)], BLACK, 6)
    p.line([(70, 72), (81, 96)], BLACK, 4)
    p.poly([(76, 95), (86, 92), (88, 102), (78, 103)], BLACK)
    p.poly([(84, 107), (95, 94), (106, 107)], BLACK)


def _signals(p: _Pen) -> None:
    for y, colour in ((60, RED), (79, YELLOW), (98, (0, 150, 70))):
        p.disc(8.5, BLACK, 64, y)
        p.disc(7, colour, 64, y)


def _pedestrian(p: _Pen) -> None:
    _person(p, 62, 106, 56, BLACK)


def _children(p: _Pen) -> None:
    _person(p, 52, 106, 46, BLACK)
    _person(p, 79, 106, 36, BLACK)


def _bicycle(p: _Pen) -> None:
    for x in (45, 83):
        p.ring(12.5, 5, BLACK, x, 93)
    p.line([(45, 93), (58, 77), (78, 77), (83, 93)], BLACK, 5)
    p.line([(58, 77), (64, 93), (78, 77)], BLACK, 5)
    p.line([(76, 70), (78, 77)], BLACK, 5)
    p.line([(71, 69), (81, 69)], BLACK, 5)
    p.line([(52, 72), (63, 72)], BLACK, 5.5)


def _snow(p: _Pen) -> None:
    cx, cy, r = 64, 80, 22
    for a in (90, 30, 150):
        dx, dy = r * math.cos(math.radians(a)), r * math.sin(math.radians(a))
        p.line([(cx - dx, cy - dy), (cx + dx, cy + dy)], BLACK, 5.5)
        for s in (-1, 1):
            bx, by = cx + s * 0.6 * dx, cy + s * 0.6 * dy
            for turn in (-45, 45):
                b = math.radians(a + turn) if s > 0 else math.radians(a + 180 + turn)
                p.line([(bx, by), (bx + 8 * math.cos(b), by + 8 * math.sin(b))], BLACK, 4)


def _deer(p: _Pen) -> None:
    """A leaping deer, up and to the right: a bold silhouette like the real pictogram."""
    p.line([(48, 92), (72, 79)], BLACK, 16)
    p.line([(71, 81), (79, 66)], BLACK, 9)
    p.disc(6.5, BLACK, 80, 64)
    p.line([(80, 64), (88, 69)], BLACK, 5)
    p.line([(77, 60), (72, 52)], BLACK, 3.5)
    p.line([(81, 59), (83, 51)], BLACK, 3.5)
    p.line([(72, 80), (87, 89)], BLACK, 5.5)
    p.line([(69, 84), (80, 99)], BLACK, 5.5)
    p.line([(50, 93), (40, 104)], BLACK, 5.5)
    p.line([(47, 91), (31, 98)], BLACK, 5.5)
    p.line([(42, 93), (38, 86)], BLACK, 4)


def _end_all(p: _Pen) -> None:
    _end_disc(p)
    _end_bars(p)


def _blue(symbol: Callable[[_Pen], None]) -> Callable[[_Pen], None]:
    def draw(p: _Pen) -> None:
        _mandatory(p)
        symbol(p)
    return draw


_ARROW = dict(fill=WHITE, width=13, head_len=18, head_w=34)


def _turn_right(p: _Pen) -> None:
    p.arrow([(48, 106)] + _arc(68, 66, 20, 180, 270) + [(74, 46)], **_ARROW)


def _ahead(p: _Pen) -> None:
    p.arrow([(64, 108), (64, 46)], **_ARROW)


def _straight_right(p: _Pen) -> None:
    p.arrow([(54, 108), (54, 48)], **_ARROW)
    p.arrow(_bezier((54, 92), (54, 72), (62, 66), (78, 66)), fill=WHITE, width=12, head_len=16, head_w=30)


def _keep_right(p: _Pen) -> None:
    p.arrow([(40, 40), (76, 76)], **_ARROW)


def _roundabout(p: _Pen) -> None:
    for a in (0, 120, 240):  # counter-clockwise arrows, as in right-hand traffic
        p.arrow(_arc(64, 64, 30, a + 100, a + 30, 16), fill=WHITE, width=10, head_len=14, head_w=24)


_DRAWERS: dict[int, Callable[[_Pen], None]] = {
    0: _speed("20"), 1: _speed("30"), 2: _speed("50"), 3: _speed("60"), 4: _speed("70"),
    5: _speed("80"), 6: _end_80, 7: _speed("100"), 8: _speed("120"),
    9: _no_passing(trucks=False), 10: _no_passing(trucks=True), 11: _right_of_way,
    12: _priority, 13: _yield, 14: _stop, 15: _no_vehicles, 16: _trucks_prohibited, 17: _no_entry,
    18: _warn(_caution), 19: _warn(_curve_left), 21: _warn(_double_curve), 22: _warn(_bumpy),
    23: _warn(_slippery), 24: _warn(_narrows_right), 25: _warn(_road_work), 26: _warn(_signals),
    27: _warn(_pedestrian), 28: _warn(_children), 29: _warn(_bicycle), 30: _warn(_snow),
    31: _warn(_deer), 32: _end_all, 33: _blue(_turn_right), 35: _blue(_ahead),
    36: _blue(_straight_right), 38: _blue(_keep_right), 40: _blue(_roundabout),
    41: _end_no_passing(trucks=False), 42: _end_no_passing(trucks=True),
}
_MIRROR_OF = {b: a for a, b in MIRROR_PAIRS}


@lru_cache(maxsize=None)
def _pictogram_hires(cid: int) -> Image.Image:
    if cid in _MIRROR_OF:  # drawn as the exact mirror so flip-relabelling is always right
        return _pictogram_hires(_MIRROR_OF[cid]).transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    pen = _Pen()
    _DRAWERS[cid](pen)
    return pen.img


def draw_pictogram(cid: int, size: int = 128) -> Image.Image:
    """The clean pictogram of class `cid` as a `size` x `size` RGBA image (transparent outside the sign)."""
    if not 0 <= cid < NUM_GTSRB_CLASSES:
        raise ValueError(f"class id {cid} is outside 0..{NUM_GTSRB_CLASSES - 1}")
    return _pictogram_hires(cid).resize((size, size), Image.Resampling.LANCZOS)


@lru_cache(maxsize=None)
def _sign_canvas(cid: int) -> Image.Image:
    """The clean 128-px pictogram cropped to the sign."""
    pic = draw_pictogram(cid, _GRID)
    return pic.crop(pic.getchannel("A").getbbox())


# --------------------------------------------------------------------------------------------
# Tracks: one physical sign in one scene, filmed while the car approaches.

_SCENE_RES = 96  # scene pixels per nominal sign size: the scene is drawn in sign units
_SKY = ((135, 175, 225), (200, 210, 225), (232, 235, 240), (170, 175, 185), (110, 150, 210))
_FOLIAGE = ((50, 90, 40), (75, 115, 50), (35, 60, 30), (110, 125, 60), (90, 100, 70))
_BUILT = ((150, 140, 130), (120, 120, 125), (170, 150, 125), (90, 80, 75), (140, 75, 60), (200, 195, 185))
_GROUND = ((90, 90, 95), (105, 100, 85), (70, 75, 70))
_VIVID = ((180, 30, 30), (30, 70, 160), (220, 180, 30), (240, 240, 240))  # cars, ads, other signs


class _Job(NamedTuple):
    seed: int
    cid: int
    track: int
    frames: int
    min_size: int
    max_size: int


class _Frame(NamedTuple):
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
    sign = _sign_canvas(cid)
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
        draw.line([tuple(rng.uniform(0, n, 2)), tuple(rng.uniform(0, n, 2))], fill=(40, 40, 35),
                  width=int(rng.integers(1, 4)))
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
        draw.rectangle([c - 0.42 * r, y0, c + 0.42 * r, y0 + 0.3 * r], fill=(235, 235, 230),
                       outline=(30, 30, 30), width=max(1, round(0.02 * r)))


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
        gain=gain, cast=1 + rng.uniform(-0.12, 0.12, 3), haze=haze,
        haze_rgb=rng.uniform(0.55, 0.85) * np.array([0.95, 1.0, 1.05]), gamma_lut=lut,
        noise=rng.uniform(0.005, 0.025) * (1.5 if mode < 0.08 else 1.0), fade_in=rng.uniform(-0.7, 0.7),
        blur=rng.uniform(0.0, 0.3), blur_per_px=rng.uniform(0, 0.005),
        motion_p=rng.uniform(0, 0.2), motion_angle=rng.normal(0, 0.35),
        jpeg=int(rng.integers(40, 90)) if rng.random() < 0.4 else 0,
        yaw=float(np.clip(rng.normal(0, 0.2), -0.5, 0.5)), pitch=rng.normal(0, 0.08), roll=rng.normal(0, 0.05),
        depth=rng.uniform(0.05, 0.3), drift=rng.uniform(-0.3, 0.3, 2),
    )


def _track_sizes(rng: np.random.Generator, job: _Job) -> np.ndarray:
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
    offs = [((i / (n - 1) - 0.5) * length * math.cos(angle), (i / (n - 1) - 0.5) * length * math.sin(angle))
            for i in range(n)]
    p = math.ceil(length / 2) + 1
    padded = np.pad(arr, ((p, p), (p, p), (0, 0)), mode="edge")
    h, w = arr.shape[:2]
    acc = np.zeros_like(arr)
    for dx, dy in offs:
        x, y = p + round(dx), p + round(dy)
        acc += padded[y:y + h, x:x + w]
    return acc / n


def _frame(sign: Image.Image, scene: Image.Image, front: Image.Image | None, look: _Look,
           size: float, t: float, rng: np.random.Generator, job: _Job) -> _Frame:
    sw, sh = sign.size
    corners = _sign_corners(sw / _GRID, sh / _GRID, look, t, rng) * size
    extent = corners.max(0) - corners.min(0)
    shrink = min(1.0, job.max_size / extent.max())  # the ROI never exceeds max_size
    size, corners, extent = size * shrink, corners * shrink, extent * shrink
    margin = max(5, round(0.1 * extent.max()))  # GTSRB: 10 % border, at least 5 px
    m = margin + rng.integers(0, 2, 4)  # left, top, right, bottom
    dst = corners - corners.min(0) + m[:2]
    span = np.ceil(extent - 1e-6).astype(int)  # the rescaled max_size side must not round up past it
    width = max(job.min_size, int(span[0] + m[0] + m[2]))
    height = max(job.min_size, int(span[1] + m[1] + m[3]))

    small = sign.resize((max(1, round(sw * size / _GRID)), max(1, round(sh * size / _GRID))),
                        Image.Resampling.LANCZOS)
    src = np.array([[0, 0], [small.width, 0], [small.width, small.height], [0, small.height]], float)
    layer = small.transform((width, height), Image.Transform.PERSPECTIVE, _perspective_coeffs(dst, src),
                            Image.Resampling.BILINEAR)

    scale, centre = _SCENE_RES / size, dst.mean(0)
    sx, sy = scene.width / 2 + look.drift * t * _SCENE_RES
    box = (sx - centre[0] * scale, sy - centre[1] * scale,
           sx + (width - centre[0]) * scale, sy + (height - centre[1]) * scale)
    img = Image.alpha_composite(scene.resize((width, height), Image.Resampling.BILINEAR, box).convert("RGBA"), layer)
    if front is not None:
        img = Image.alpha_composite(img, front.resize((width, height), Image.Resampling.BILINEAR, box))
    img = img.convert("RGB").filter(
        ImageFilter.GaussianBlur(float(look.blur + look.blur_per_px * size + rng.uniform(0, 0.2))))

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
    return _Frame(buf.getvalue(), (width, height, int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[-1])))


def _render_track(job: _Job) -> list[_Frame]:
    """All frames of one track; its own RNG makes the result independent of scheduling."""
    rng = np.random.default_rng([job.seed, job.cid, job.track])
    sign = _weathered_sign(job.cid, rng)
    # the scene must cover the widest margin (5 px around the smallest sign) plus the drift
    n = 2 * math.ceil(_SCENE_RES * (1.05 + 8 / job.min_size))
    scene, front = _scene(rng, n, sign.height / _GRID)
    look = _look(rng)
    sizes = _track_sizes(rng, job)
    return [_frame(sign, scene, front, look, s, i / max(1, job.frames - 1), rng, job) for i, s in enumerate(sizes)]


# --------------------------------------------------------------------------------------------
# Archives

def track_counts(tracks_per_class: float, minimum: int) -> list[int]:
    """Tracks per class: max(minimum, round(tracks_per_class * real_count / mean real_count))."""
    mean = sum(REAL_TRAIN_COUNTS) / len(REAL_TRAIN_COUNTS)
    return [max(minimum, round(tracks_per_class * c / mean)) for c in REAL_TRAIN_COUNTS]


def _add(zf: zipfile.ZipFile, name: str, data: bytes) -> None:
    # fixed timestamp, OS and permissions: the archive bytes depend only on the content
    info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.create_system = 3
    info.external_attr = 0o644 << 16
    zf.writestr(info, data)


def _csv(header: list[str], rows: Iterable[list]) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, delimiter=";", lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue().encode("ascii")


def _zip(path: Path) -> zipfile.ZipFile:
    return zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=6)


def _write_train(path: Path, results: Iterator[tuple[_Job, list[_Frame]]]) -> None:
    """Stream the training tracks (ordered by class, then track) into the archive."""
    with atomic_path(path) as tmp, _zip(tmp) as zf:
        for cid, group in groupby(results, key=lambda r: r[0].cid):
            folder, rows = f"{TRAIN_DIR}/{cid:05d}/", []
            for job, frames in group:
                for i, frame in enumerate(frames):
                    name = f"{job.track:05d}_{i:05d}.ppm"
                    _add(zf, folder + name, frame.ppm)
                    rows.append([name, *frame.fields, cid])
            _add(zf, f"{folder}GT-{cid:05d}.csv", _csv(_HEADER + ["ClassId"], rows))


def _write_test(out: Path, frames: list[tuple[int, _Frame]]) -> None:
    """Test images numbered in their (shuffled) order; the labels go into the separate GT archive."""
    rows = [[f"{i:05d}.ppm", *frame.fields] for i, (_, frame) in enumerate(frames)]
    with atomic_path(out / TEST_ZIP) as tmp, _zip(tmp) as zf:
        for row, (_, frame) in zip(rows, frames):
            _add(zf, f"{TEST_DIR}/{row[0]}", frame.ppm)
        _add(zf, f"{TEST_DIR}/GT-final_test.test.csv", _csv(_HEADER, rows))
    with atomic_path(out / TEST_GT_ZIP) as tmp, _zip(tmp) as zf:
        _add(zf, TEST_GT_CSV, _csv(_HEADER + ["ClassId"], [row + [cid] for row, (cid, _) in zip(rows, frames)]))


@contextmanager
def _track_renderer(workers: int) -> Iterator[Callable[[list[_Job]], Iterator[list[_Frame]]]]:
    """Map jobs to frames in order, in-process or on `workers` spawned processes."""
    if workers <= 1:
        yield lambda jobs: map(_render_track, jobs)
        return
    # spawn, not fork: the caller may hold threads (TensorFlow) that a fork would copy half-locked
    pool = ProcessPoolExecutor(workers, mp_context=get_context("spawn"))
    try:
        yield lambda jobs: pool.map(_render_track, jobs)
    finally:
        pool.shutdown(cancel_futures=True)


def _check_args(seed: int, train: float, test: float, frames: int, min_size: int, max_size: int,
                workers: int | None) -> None:
    problems = []
    if not (isinstance(seed, int) and seed >= 0):
        problems.append(f"seed must be a non-negative integer, got {seed!r}")
    if not (train > 0 and test > 0):
        problems.append(f"tracks per class must be > 0, got train={train!r}, test={test!r}")
    if frames < 1:
        problems.append(f"frames_per_track must be >= 1, got {frames!r}")
    if not 5 <= min_size <= max_size:
        problems.append(f"need 5 <= min_size <= max_size, got min_size={min_size!r}, max_size={max_size!r}")
    if workers is not None and workers < 1:
        problems.append(f"workers must be >= 1 or None, got {workers!r}")
    if problems:
        raise PipelineError("synthetic GTSRB: " + "; ".join(problems))


def write_synthetic_gtsrb(out_dir: str | os.PathLike, *, seed: int, train_tracks_per_class: float,
                          test_tracks_per_class: float, frames_per_track: int = 30, min_size: int = 15,
                          max_size: int = 120, workers: int | None = None) -> dict[str, str]:
    """Write the three GTSRB archives into out_dir; return {file name: md5 hex} of what was written.

    Class c gets max(2, round(train_tracks_per_class * n_c / mean(n))) training tracks and
    max(1, round(test_tracks_per_class * n_c / mean(n))) test tracks, n = REAL_TRAIN_COUNTS, so the
    class frequencies follow the real GTSRB. A track is `frames_per_track` frames of one physical
    sign whose size (the larger ROI side) grows within [min_size, max_size] px; each image adds a
    ~10 % (>= 5 px) border of scene. Test frames are whole held-out tracks, shuffled across classes.
    Identical arguments give byte-identical archives, whatever `workers` (default: all CPUs).
    """
    _check_args(seed, train_tracks_per_class, test_tracks_per_class, frames_per_track, min_size, max_size, workers)
    out = Path(out_dir)
    n_train = track_counts(train_tracks_per_class, 2)
    n_test = track_counts(test_tracks_per_class, 1)
    shape = (frames_per_track, min_size, max_size)
    # test tracks are numbered after the class's training tracks, so every track has its own RNG key
    train_jobs = [_Job(seed, c, t, *shape) for c in range(NUM_GTSRB_CLASSES) for t in range(n_train[c])]
    test_jobs = [_Job(seed, c, n_train[c] + t, *shape) for c in range(NUM_GTSRB_CLASSES) for t in range(n_test[c])]
    jobs = train_jobs + test_jobs

    with _track_renderer(min(workers or os.cpu_count() or 1, len(jobs))) as render:
        results = zip(jobs, tqdm(render(jobs), total=len(jobs), desc="synthetic GTSRB", unit="track", disable=None))
        _write_train(out / TRAIN_ZIP, islice(results, len(train_jobs)))
        test = [(j.cid, frame) for j, frames in results for frame in frames]
    order = np.random.default_rng([seed, _TEST_SHUFFLE_KEY]).permutation(len(test))
    _write_test(out, [test[i] for i in order])

    digests = {}
    for name in (TRAIN_ZIP, TEST_ZIP, TEST_GT_ZIP):
        with open(out / name, "rb") as f:
            digests[name] = hashlib.file_digest(f, "md5").hexdigest()
    return digests
