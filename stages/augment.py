"""DVC stage `augment`: the prepared training split -> data/augmented/train.h5, plus plots/augment/.

Val and test are not copied: `train` and `evaluate` read them from the prepared dataset, unaugmented.
"""
from trafficsigns import plots
from trafficsigns.augment import augment_split, showcase
from trafficsigns.config import Params
from trafficsigns.dataset import expected_meta
from trafficsigns.h5store import read_dataset
from trafficsigns.paths import AUGMENT_PLOTS, AUGMENTED, DATASET


def main(params: Params, workers: int | None = None) -> None:
    ds = read_dataset(DATASET, splits=("train",), expected=expected_meta(params.data.source, params.prepare))
    augment_split(ds, AUGMENTED, params.augment, workers=workers)
    plots.augment_families(**showcase(ds, params.augment), path=AUGMENT_PLOTS / "families.png")


if __name__ == "__main__":
    from trafficsigns.cli import run_stage

    run_stage(main)
