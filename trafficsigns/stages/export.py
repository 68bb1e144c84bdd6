"""DVC stage `export` (off by default): SavedModel and TFLite float32/int8 of the best model, each scored
on the test set next to the Keras model in metrics/export.json, so the cost of quantisation is a number."""

import json

from trafficsigns.core.config import Params
from trafficsigns.core.fsutil import write_text
from trafficsigns.core.paths import BEST_MODEL, DATASET, EXPORT_DIR, EXPORT_METRICS


def main(params: Params) -> None:
    if not params.export.enabled:
        # DVC needs the declared outputs to exist; they say how to switch the stage on (`{}`: no DVC column).
        write_text(EXPORT_DIR / "README.txt", "Exports are off: dvc exp run -S export.enabled=true\n")
        write_text(EXPORT_METRICS, json.dumps({}, indent=2) + "\n")
        return
    from trafficsigns.modeling.export import evaluate_exports, export_all  # TensorFlow: only when exporting

    export_all(BEST_MODEL, DATASET, EXPORT_DIR, representative_count=params.export.representative_count)
    scores = evaluate_exports(BEST_MODEL, EXPORT_DIR, DATASET, batch_size=params.evaluate.batch_size)
    # Under "export", so DVC's columns read export.tflite_int8.accuracy (test set), export.tflite_int8.bytes.
    write_text(EXPORT_METRICS, json.dumps({"export": scores}, indent=2) + "\n")


if __name__ == "__main__":
    from trafficsigns.core.shell import run_stage

    run_stage(main)
