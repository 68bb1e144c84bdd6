"""The 43 GTSRB classes as clean pictograms, drawn on a 128-unit design grid (no font or image files).

Longer than our ~400-line guide on purpose: it is one drawing per class plus the pen they share, and
splitting the catalogue would only scatter the table `_DRAWERS` points into.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from functools import cache, lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from trafficsigns.data.classes import MIRROR_PAIRS, NUM_GTSRB_CLASSES  # class b of a pair is drawn as the mirror of a

GRID = 128
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
    return [
        (cx + r * math.cos(math.radians(rot + 360 * i / n)), cy + r * math.sin(math.radians(rot + 360 * i / n)))
        for i in range(n)
    ]


def _arc(cx: float, cy: float, r: float, a0: float, a1: float, n: int = 24) -> list[_Pt]:
    return [
        (
            cx + r * math.cos(math.radians(a0 + (a1 - a0) * i / n)),
            cy + r * math.sin(math.radians(a0 + (a1 - a0) * i / n)),
        )
        for i in range(n + 1)
    ]


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
        self.img = Image.new("RGBA", (GRID * _SS,) * 2, (0, 0, 0, 0))
        self.draw = ImageDraw.Draw(self.img)

    @staticmethod
    def _s(pts: Iterable[_Pt]) -> list[_Pt]:
        return [(x * _SS, y * _SS) for x, y in pts]

    def disc(self, r: float, fill, cx: float = 64, cy: float = 64) -> None:
        self.draw.ellipse([(cx - r) * _SS, (cy - r) * _SS, (cx + r) * _SS, (cy + r) * _SS], fill=fill)

    def ring(self, r: float, width: float, fill, cx: float = 64, cy: float = 64) -> None:
        self.draw.ellipse(
            [(cx - r) * _SS, (cy - r) * _SS, (cx + r) * _SS, (cy + r) * _SS], outline=fill, width=round(width * _SS)
        )

    def poly(self, pts: list[_Pt], fill) -> None:
        self.draw.polygon(self._s(pts), fill=fill)

    def line(self, pts: list[_Pt], fill, width: float, caps: bool = True) -> None:
        self.draw.line(self._s(pts), fill=fill, width=round(width * _SS), joint="curve")
        if caps:
            for x, y in (pts[0], pts[-1]):
                self.disc(width / 2, fill, x, y)

    def rounded(self, n: int, r: float, fill, corner: float, cx: float = 64, cy: float = 64, rot: float = -90) -> None:
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
        self.poly(
            [
                (x1 + ux * head_len, y1 + uy * head_len),
                (x1 - uy * head_w / 2, y1 + ux * head_w / 2),
                (x1 - ux, y1 - uy),
                (x1 + uy * head_w / 2, y1 - ux * head_w / 2),
            ],
            fill,
        )

    def text(self, s: str, cx: float, cy: float, w: float, h: float, fill) -> None:
        """`s` stretched to exactly w x h units (condensed like the DIN digits of real signs)."""
        # a stroke makes the regular face as bold as sign lettering, which must read from afar
        left, top, right, bottom = _font().getbbox(s, stroke_width=4)
        mask = Image.new("L", (right - left, bottom - top))
        ImageDraw.Draw(mask).text((-left, -top), s, font=_font(), fill=255, stroke_width=4, stroke_fill=255)
        mask = mask.resize((round(w * _SS), round(h * _SS)), Image.Resampling.LANCZOS)
        self.img.paste(Image.new("RGBA", mask.size, fill), (round((cx - w / 2) * _SS), round((cy - h / 2) * _SS)), mask)


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
        half = math.sqrt(61**2 - off**2)
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
    p.poly(
        [
            (cx - 0.33 * w, cy - 0.55 * w),
            (cx + 0.33 * w, cy - 0.55 * w),
            (cx + 0.44 * w, cy - 0.1 * w),
            (cx - 0.44 * w, cy - 0.1 * w),
        ],
        fill,
    )
    p.poly(
        [
            (cx - 0.25 * w, cy - 0.46 * w),
            (cx + 0.25 * w, cy - 0.46 * w),
            (cx + 0.33 * w, cy - 0.16 * w),
            (cx - 0.33 * w, cy - 0.16 * w),
        ],
        WHITE,
    )
    p.draw.rounded_rectangle(
        p._s([(cx - 0.5 * w, cy - 0.14 * w), (cx + 0.5 * w, cy + 0.3 * w)]), radius=0.08 * w * _SS, fill=fill
    )
    for sx in (-1, 1):
        p.draw.rectangle(
            p._s([(cx + sx * 0.46 * w - 0.1 * w, cy + 0.28 * w), (cx + sx * 0.46 * w + 0.1 * w, cy + 0.48 * w)]),
            fill=fill,
        )


def _truck_rear(p: _Pen, cx: float, cy: float, w: float, fill) -> None:
    """A lorry from behind: a tall solid box with a door seam, clearly bigger than the car."""
    p.draw.rectangle(p._s([(cx - 0.55 * w, cy - 0.95 * w), (cx + 0.55 * w, cy + 0.3 * w)]), fill=fill)
    p.draw.rectangle(p._s([(cx - 0.03 * w, cy - 0.85 * w), (cx + 0.03 * w, cy + 0.1 * w)]), fill=WHITE)
    for sx in (-1, 1):
        p.draw.rectangle(
            p._s([(cx + sx * 0.4 * w - 0.12 * w, cy + 0.28 * w), (cx + sx * 0.4 * w + 0.12 * w, cy + 0.5 * w)]),
            fill=fill,
        )


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
    0: _speed("20"),
    1: _speed("30"),
    2: _speed("50"),
    3: _speed("60"),
    4: _speed("70"),
    5: _speed("80"),
    6: _end_80,
    7: _speed("100"),
    8: _speed("120"),
    9: _no_passing(trucks=False),
    10: _no_passing(trucks=True),
    11: _right_of_way,
    12: _priority,
    13: _yield,
    14: _stop,
    15: _no_vehicles,
    16: _trucks_prohibited,
    17: _no_entry,
    18: _warn(_caution),
    19: _warn(_curve_left),
    21: _warn(_double_curve),
    22: _warn(_bumpy),
    23: _warn(_slippery),
    24: _warn(_narrows_right),
    25: _warn(_road_work),
    26: _warn(_signals),
    27: _warn(_pedestrian),
    28: _warn(_children),
    29: _warn(_bicycle),
    30: _warn(_snow),
    31: _warn(_deer),
    32: _end_all,
    33: _blue(_turn_right),
    35: _blue(_ahead),
    36: _blue(_straight_right),
    38: _blue(_keep_right),
    40: _blue(_roundabout),
    41: _end_no_passing(trucks=False),
    42: _end_no_passing(trucks=True),
}
_MIRROR_OF = {b: a for a, b in MIRROR_PAIRS}


@cache
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


@cache
def sign_canvas(cid: int) -> Image.Image:
    """The clean 128-px pictogram cropped to the sign."""
    pic = draw_pictogram(cid, GRID)
    return pic.crop(pic.getchannel("A").getbbox())
