"""DVC stage `train`: fit the model on the (augmented) train split, keep the best on val; dvclive logs per epoch."""

import logging

from trafficsigns.core.config import Params
from trafficsigns.core.paths import (
    AUGMENTED,
    BEST_MODEL,
    CHECKPOINT_DIR,
    DATASET,
    LAST_MODEL,
    TENSORBOARD_DIR,
    TRAIN_LIVE_DIR,
    TRAIN_TIMINGS,
)
from trafficsigns.data.h5store import expected_meta, read_dataset
from trafficsigns.modeling.training import train


def main(params: Params) -> None:
    expected = expected_meta(params.data.source, params.prepare)
    ds = read_dataset(DATASET, splits=("val",), expected=expected)
    augmented = read_dataset(AUGMENTED, splits=("train",), expected=expected)
    ds.x["train"], ds.y["train"] = augmented.x["train"], augmented.y["train"]
    summary = train(
        ds,
        params.model,
        params.train,
        BEST_MODEL,
        LAST_MODEL,
        TRAIN_LIVE_DIR,
        TENSORBOARD_DIR,
        augment=params.augment,
        checkpoint_dir=CHECKPOINT_DIR,
        timings=TRAIN_TIMINGS,
    )
    logging.getLogger(__name__).info(
        "best val accuracy %.4f at epoch %d", summary["best_val_accuracy"], summary["best_epoch"]
    )


if __name__ == "__main__":
    from trafficsigns.core.shell import run_stage

    run_stage(main)
