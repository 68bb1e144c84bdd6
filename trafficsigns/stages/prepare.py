"""DVC stage `prepare`: raw data -> data/prepared/dataset.h5, plus data plots in plots/data/."""

from trafficsigns.core.config import Params
from trafficsigns.core.paths import CLASS_HISTOGRAM, DATASET, IMAGE_SIZES, RAW_DIR, SAMPLES
from trafficsigns.data.dataset import build_dataset
from trafficsigns.data.h5store import write_dataset
from trafficsigns.reporting import plots


def main(params: Params) -> None:
    ds, raw_sizes = build_dataset(RAW_DIR, params.prepare, params.data.source)
    write_dataset(DATASET, ds)
    plots.class_histogram(ds.y, ds.num_classes, CLASS_HISTOGRAM)
    plots.size_histogram(raw_sizes, IMAGE_SIZES)
    meta = ds.meta
    plots.sample_grid(
        ds.x["train"],
        ds.y["train"],
        ds.class_names,
        SAMPLES,
        title=f"One training image per class, {meta['size']} px {meta['mode']}",
    )


if __name__ == "__main__":
    from trafficsigns.core.shell import run_stage

    run_stage(main)
