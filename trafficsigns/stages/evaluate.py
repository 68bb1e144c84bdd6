"""DVC stage `evaluate`: the best model on the held-out test set -> metrics/evaluate.json, plots/evaluate/;
with `evaluate.ensemble`, a committee of models -> metrics/ensemble.json."""

import csv
import io
import json

import numpy as np

from trafficsigns.core.config import Params
from trafficsigns.core.errors import PipelineError
from trafficsigns.core.fsutil import write_text
from trafficsigns.core.paths import (
    BEST_MODEL,
    CONFUSION_CSV,
    CONFUSION_FIGURE,
    DATASET,
    ENSEMBLE_METRICS,
    ERRORS_FIGURE,
    EVALUATE_METRICS,
    PER_CLASS_CSV,
    PER_CLASS_FIGURE,
)
from trafficsigns.data.h5store import expected_meta, read_dataset
from trafficsigns.modeling.metrics import classification_metrics, per_class_accuracy
from trafficsigns.reporting import plots


def csv_text(header: tuple[str, ...], rows) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows([header, *rows])
    return out.getvalue()


def check_model_fits(model_path, meta: dict, class_names: list[str]) -> None:
    """The model must have been trained on images prepared as these were, with these classes in this order:
    otherwise Keras fails with a traceback on the shapes, or, worse, the scores are of another task."""
    from trafficsigns.modeling.models import read_model_metadata

    saved = read_model_metadata(model_path)
    preprocessing = saved.get("preprocessing") if isinstance(saved.get("preprocessing"), dict) else {}
    differ = [k for k in ("size", "mode", "channels") if preprocessing.get(k) != meta.get(k)]
    if differ or saved.get("class_names") != class_names:
        what = ", ".join(f"{k} {preprocessing.get(k)!r} vs {meta.get(k)!r}" for k in differ) or "the class names"
        raise PipelineError(
            f"{model_path} was trained on other data than the dataset's ({what}); re-run train (dvc repro)"
        )


def main(params: Params) -> None:
    # Imported here: they load TensorFlow, which `--help` should not wait for.
    from trafficsigns.modeling.ensemble import ensemble_metrics
    from trafficsigns.modeling.models import load_model

    ds = read_dataset(DATASET, splits=("test",), expected=expected_meta(params.data.source, params.prepare))
    x, y = ds.x["test"], ds.y["test"]
    check_model_fits(BEST_MODEL, ds.meta, ds.class_names)
    probs = load_model(BEST_MODEL).predict(x, batch_size=params.evaluate.batch_size, verbose=0)
    headline, confusion = classification_metrics(probs, y)
    per_class = per_class_accuracy(confusion)
    # Nested under "test", so `dvc exp show` and `dvc metrics diff` name them test.accuracy, test.macro_f1...
    write_text(EVALUATE_METRICS, json.dumps({"test": headline}, indent=2) + "\n")
    labels = [plots.class_label(i, n) for i, n in enumerate(ds.class_names)]
    # One row per test image: DVC's `confusion` template counts them into the matrix.
    write_text(
        CONFUSION_CSV,
        csv_text(("actual", "predicted"), ((labels[a], labels[p]) for a, p in zip(y, probs.argmax(axis=1)))),
    )
    write_text(
        PER_CLASS_CSV,
        csv_text(
            ("class", "accuracy"),
            ((labels[i], round(float(a), 6)) for i, a in enumerate(per_class) if not np.isnan(a)),
        ),
    )
    plots.per_class_bars(per_class, ds.class_names, PER_CLASS_FIGURE)
    plots.confusion_heatmap(confusion, CONFUSION_FIGURE)
    plots.error_gallery(x, y, probs, ds.class_names, ERRORS_FIGURE, params.evaluate.errors_shown)
    write_text(
        ENSEMBLE_METRICS,
        json.dumps(ensemble_metrics(params.evaluate.ensemble, ds, params.evaluate.batch_size), indent=2) + "\n",
    )


if __name__ == "__main__":
    from trafficsigns.core.shell import run_stage

    run_stage(main)
