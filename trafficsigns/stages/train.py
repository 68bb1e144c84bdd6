"""DVC stage `train`: fit the model on the (augmented) train split, keep the best on val; dvclive logs per epoch."""

import logging

from trafficsigns.core.config import Params
from trafficsigns.core.paths import (
    AUGMENTED,
    BEST_MODEL,
    CHECKPOINT_DIR,
    DATASET,
    LAST_MODEL,
    TRAIN_LIVE_DIR,
    TRAIN_TIMINGS,
    tensorboard_root,
)
from trafficsigns.data.h5store import expected_meta, read_dataset


def main(params: Params) -> None:
    from trafficsigns.modeling.training import train  # here: TensorFlow, which `--help` should not wait for

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
        tensorboard_root(),
        augment=params.augment,
        checkpoint_dir=CHECKPOINT_DIR,
        timings=TRAIN_TIMINGS,
    )
    logging.getLogger("train").info(
        "best val accuracy %.4f at epoch %d", summary["best_val_accuracy"], summary["best_epoch"]
    )


if __name__ == "__main__":
    from trafficsigns.core.shell import run_stage

    run_stage(main)
