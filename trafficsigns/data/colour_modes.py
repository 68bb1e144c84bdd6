"""FIDLE's colour and equalisation modes (`prepare.mode`), in one table: each mode's channels and the
equalisation `trafficsigns/data/images.py` applies.

Light (the standard library and core/errors.py only): core/config.py reads the names from here.
"""

from __future__ import annotations

from typing import NamedTuple

from trafficsigns.core.errors import PipelineError

# Equalisations, as FIDLE's GTSRB1 applies them with scikit-image.
HE = "HE"  # histogram equalisation (of the HSV value for RGB)
LHE = "LHE"  # local histogram equalisation (rank.equalize over a disk of radius 10)
CLAHE = "CLAHE"  # contrast-limited adaptive histogram equalisation (equalize_adapthist's defaults)


class ColourMode(NamedTuple):
    channels: int  # 3: RGB, 1: grey (L)
    equalise: str | None  # None, HE, LHE or CLAHE


MODES: dict[str, ColourMode] = {
    "RGB": ColourMode(3, None),
    "RGB-HE": ColourMode(3, HE),
    "L": ColourMode(1, None),
    "L-HE": ColourMode(1, HE),
    "L-LHE": ColourMode(1, LHE),
    "L-CLAHE": ColourMode(1, CLAHE),
}
COLOUR_MODES = tuple(MODES)
CHANNELS = {name: mode.channels for name, mode in MODES.items()}


def colour_mode(name: str) -> ColourMode:
    """The mode called `name`; an unknown name is a PipelineError that lists the known ones."""
    try:
        return MODES[name]
    except KeyError:
        raise PipelineError(f"unknown colour mode {name!r}; allowed: {', '.join(MODES)}") from None
