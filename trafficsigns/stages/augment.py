"""DVC stage `augment`: the prepared training split -> data/augmented/train.h5, plus plots/augment/.

Val and test are not copied: `train` and `evaluate` read them from the prepared dataset, unaugmented.
"""

from trafficsigns.core.config import Params
from trafficsigns.core.paths import AUGMENT_PLOTS, AUGMENTED, DATASET
from trafficsigns.data.augment import augment_split, showcase
from trafficsigns.data.h5store import expected_meta, read_dataset
from trafficsigns.reporting import plots


def main(params: Params, workers: int | None = None) -> None:
    ds = read_dataset(DATASET, splits=("train",), expected=expected_meta(params.data.source, params.prepare))
    augment_split(ds, AUGMENTED, params.augment, workers=workers)
    plots.augment_families(**showcase(ds, params.augment), path=AUGMENT_PLOTS / "families.png")


if __name__ == "__main__":
    from trafficsigns.core.shell import run_stage

    run_stage(main)
