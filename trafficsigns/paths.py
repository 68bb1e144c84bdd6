"""Where each stage reads and writes, relative to the project root (the same names as in dvc.yaml)."""
from pathlib import Path

DOWNLOAD_CACHE = Path("data/downloads")  # outside DVC's outputs, so partial downloads survive a re-run
RAW_DIR = Path("data/raw")
DATASET = Path("data/prepared/dataset.h5")
DATA_PLOTS = Path("plots/data")
BEST_MODEL = Path("models/best.keras")
LAST_MODEL = Path("models/last.keras")
TENSORBOARD_DIR = Path("logs/tensorboard")
TRAIN_LIVE_DIR = Path("metrics/train")
EVALUATE_METRICS = Path("metrics/evaluate.json")
EVALUATE_PLOTS = Path("plots/evaluate")
EXPORT_DIR = Path("models/export")
EXPORT_METRICS = Path("metrics/export.json")
