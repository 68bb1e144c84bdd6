"""Offline, deterministic synthetic GTSRB, written in exactly the official archive format.

The pipeline's default data source: it lets download -> prepare -> train -> evaluate run without
internet. Each of the 43 classes is drawn once as a clean pictogram (`draw_pictogram`); a *track* is
one physical sign (its own paint, fading, dirt, background scene, lighting and camera tilt) filmed
as a car approaches, so the sign grows over the track's frames as in the real GTSRB. Frames get
per-frame camera nuisances (jitter, defocus/motion blur, exposure drift, sensor noise, JPEG).

Everything random comes from `numpy.random.default_rng([seed, cid, track])`, so the archives are
byte-identical for the same arguments whatever the worker count (with the same pinned libraries).
"""

from trafficsigns.data.synthetic.archive import REAL_TRAIN_COUNTS, track_counts, write_synthetic_gtsrb
from trafficsigns.data.synthetic.pictograms import draw_pictogram

__all__ = ["REAL_TRAIN_COUNTS", "draw_pictogram", "track_counts", "write_synthetic_gtsrb"]
