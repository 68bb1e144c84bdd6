"""Where each stage reads and writes, relative to the project root (the same names as in dvc.yaml)."""

import os
from pathlib import Path

DATA_CHECKED = Path("data/checked/data.json")  # stage check: data.* validated before download may run
DOWNLOAD_CACHE = Path("data/downloads")  # outside DVC's outputs, so partial downloads survive a re-run
RAW_DIR = Path("data/raw")
DATASET = Path("data/prepared/dataset.h5")
DATA_PLOTS = Path("plots/data")
AUGMENTED = Path("data/augmented/train.h5")  # the training split, augmented; val/test stay in DATASET
AUGMENT_PLOTS = Path("plots/augment")
BEST_MODEL = Path("models/best.keras")
LAST_MODEL = Path("models/last.keras")
# train's resume state (checkpoints, dvclive's step logs), outside DVC's outputs as DOWNLOAD_CACHE is: DVC
# deletes a stage's outputs before running it, and a stage with `persist` outputs gets no run-cache.
CHECKPOINT_DIR = Path("data/checkpoints")
TENSORBOARD_DIR = Path("logs/tensorboard")  # one folder per run: see tensorboard_root
QUEUE_LOG = Path("logs/queue.log")  # the DVC queue workers of `python -m trafficsigns grid`
TRAIN_LIVE_DIR = Path("metrics/train")
TRAIN_TIMINGS = Path("metrics/timings.json")  # train's wall-clock figures; no later stage reads them
EVALUATE_METRICS = Path("metrics/evaluate.json")
EVALUATE_PLOTS = Path("plots/evaluate")
EXPORT_DIR = Path("models/export")
EXPORT_METRICS = Path("metrics/export.json")
ENSEMBLE_METRICS = Path("metrics/ensemble.json")
DEMYSTIFY_PLOTS = Path("plots/demystify")
REPORT_HTML = Path("reports/report.html")
REPORT_MD = Path("reports/report.md")
REPORT_IMAGES = Path("reports/images")  # the Markdown report's figures; the HTML embeds them
REPORT_BASELINE = Path(
    "reports/baseline.json"
)  # what the report compares with: an input, set by `trafficsigns baseline`
COMPARE_HTML = Path("reports/compare.html")  # not a stage: `python -m trafficsigns compare`
COMPARE_MD = Path("reports/compare.md")
COMPARE_IMAGES = Path("reports/compare")
GRID_FILE = Path("grid.yaml")

# The folders the stages write into (each of dvc.yaml's outs lies under one; a test checks it). DVC empties
# an output before its stage runs, so data.mirror may point inside none of them.
STAGE_OUTPUTS = (
    DATA_CHECKED.parent,
    RAW_DIR,
    DATASET.parent,
    AUGMENTED.parent,
    Path("models"),
    Path("metrics"),
    Path("plots"),
    Path("reports"),
    Path("logs"),
)

# Files one stage writes and another (the report) reads.
TRAIN_SUMMARY = TRAIN_LIVE_DIR / "metrics.json"  # dvclive's summary: best epoch, train time, weights...
CLASS_HISTOGRAM = DATA_PLOTS / "class_histogram.png"
IMAGE_SIZES = DATA_PLOTS / "image_sizes.png"
SAMPLES = DATA_PLOTS / "samples.png"

CONFUSION_CSV = EVALUATE_PLOTS / "confusion.csv"  # one row per test image, as DVC's confusion template counts
PER_CLASS_CSV = EVALUATE_PLOTS / "per_class_accuracy.csv"
PER_CLASS_FIGURE = EVALUATE_PLOTS / "per_class_accuracy.png"
CONFUSION_FIGURE = EVALUATE_PLOTS / "confusion_matrix.png"
ERRORS_FIGURE = EVALUATE_PLOTS / "worst_errors.png"


def step_logs(live_dir: Path) -> Path:
    """dvclive's per-step logs under its folder: <split>/<metric>.tsv, one row per step (an epoch here)."""
    return live_dir / "plots" / "metrics"


def tensorboard_root() -> Path:
    """TENSORBOARD_DIR in the repo the user works in. A queued experiment (`dvc queue start`) runs in a temporary
    copy of the repo that DVC deletes afterwards; DVC sets DVC_ROOT to the original repo's root (the project
    root in a plain `dvc repro` too), so its logs land where `tensorboard --logdir logs/tensorboard` looks."""
    return Path(os.environ.get("DVC_ROOT", ".")) / TENSORBOARD_DIR
