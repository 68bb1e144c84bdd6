"""The 43 GTSRB classes, in ClassId order (names as in the official readme)."""

GTSRB_CLASS_NAMES: tuple[str, ...] = (
    "Speed limit (20km/h)",
    "Speed limit (30km/h)",
    "Speed limit (50km/h)",
    "Speed limit (60km/h)",
    "Speed limit (70km/h)",
    "Speed limit (80km/h)",
    "End of speed limit (80km/h)",
    "Speed limit (100km/h)",
    "Speed limit (120km/h)",
    "No passing",
    "No passing for vehicles over 3.5 tons",
    "Right-of-way at the next intersection",
    "Priority road",
    "Yield",
    "Stop",
    "No vehicles",
    "Vehicles over 3.5 tons prohibited",
    "No entry",
    "General caution",
    "Dangerous curve to the left",
    "Dangerous curve to the right",
    "Double curve",
    "Bumpy road",
    "Slippery road",
    "Road narrows on the right",
    "Road work",
    "Traffic signals",
    "Pedestrians",
    "Children crossing",
    "Bicycles crossing",
    "Beware of ice/snow",
    "Wild animals crossing",
    "End of all speed and passing limits",
    "Turn right ahead",
    "Turn left ahead",
    "Ahead only",
    "Go straight or right",
    "Go straight or left",
    "Keep right",
    "Keep left",
    "Roundabout mandatory",
    "End of no passing",
    "End of no passing by vehicles over 3.5 tons",
)
NUM_GTSRB_CLASSES = len(GTSRB_CLASS_NAMES)

# Flip tables, the one place that says which flips keep a sign a sign (augmentation relabels with them).
# Each entry is checked on the synthetic pictograms (tests/test_augment.py) and must be true of the real
# signs too: the pictograms can only refute an entry, not prove it.
# (a, b): class b is the horizontal mirror image of class a (curve, turn, straight-or-turn, keep).
MIRROR_PAIRS = ((19, 20), (33, 34), (36, 37), (38, 39))
# Classes that are their own left-right mirror image. Not 23 (slippery road): its pictogram happens to
# be symmetric, but the real sign's skid marks are not.
HFLIP_SELF = frozenset({11, 12, 13, 15, 17, 18, 22, 26, 30, 35})
# Their own top-bottom mirror image. Not 1 or 5: the digits of "30" and "80" are not symmetric top to
# bottom (the flipped pictograms are nearly as close to the other speed limits as to themselves).
VFLIP_SELF = frozenset({12, 15, 17})
# Their own image after flipping both axes (a 180° rotation). Not 40: the roundabout's three arrows
# repeat every 120°, so half a turn puts them where no arrow was.
ROT180_SELF = frozenset({12, 15, 17, 32})
FLIPS = ("horizontal", "vertical", "both")


def has_flip_tables(class_names) -> bool:
    """Whether the flip tables describe these classes: GTSRB's, in ClassId order (not MNIST's digits)."""
    return tuple(class_names) == GTSRB_CLASS_NAMES


def flipped_class(cid: int, flip: str) -> int | None:
    """The class an image of `cid` shows after `flip` (one of FLIPS), or None if it shows no GTSRB sign."""
    if flip == "horizontal":
        mirror = {a: b for pair in MIRROR_PAIRS for a, b in (pair, pair[::-1])}
        return cid if cid in HFLIP_SELF else mirror.get(cid)
    if flip == "vertical":
        return cid if cid in VFLIP_SELF else None
    if flip == "both":
        return cid if cid in ROT180_SELF else None
    raise ValueError(f"unknown flip {flip!r}; allowed: {', '.join(FLIPS)}")
