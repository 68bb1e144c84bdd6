"""DVC stage `demystify` (off by default: ~30 s on 2 CPU cores): convolution, ReLU, max-pooling and SGD
figures from the trained model and the test set, in plots/demystify/, which the report embeds."""

import logging

from trafficsigns.core.config import Params
from trafficsigns.core.errors import PipelineError
from trafficsigns.core.fsutil import write_text
from trafficsigns.core.paths import BEST_MODEL, DATASET, DEMYSTIFY_PLOTS
from trafficsigns.explain.demystify import demystify


def main(params: Params) -> None:
    if not params.demystify.enabled:
        # DVC needs the declared output to exist; it says how to switch the stage on.
        write_text(
            DEMYSTIFY_PLOTS / "README.txt", "The demystify figures are off: dvc exp run -S demystify.enabled=true\n"
        )
        return
    # wall_time=False: figure 4 against parameter updates, not seconds, so the outputs are the same bytes
    # on every run (the seconds are in the log).
    try:
        demystify(DEMYSTIFY_PLOTS, BEST_MODEL, DATASET, wall_time=False)
    except PipelineError as exc:  # no plain ReLU first convolution (dnn, resnet): the figures without it
        logging.getLogger("demystify").warning("%s: drawing the figures without the model", exc)
        demystify(DEMYSTIFY_PLOTS, None, DATASET, wall_time=False)


if __name__ == "__main__":
    from trafficsigns.core.shell import run_stage

    run_stage(main)
