"""Ship a trained model: TensorFlow SavedModel, TFLite float32 and full-integer int8 TFLite.

`export_all` writes the three beside the model's metadata (class names, preprocessing) into one
folder; `evaluate_exports` scores each on the test split next to the Keras model, so the cost of
quantisation is a number. Every output is written under a temporary name and renamed into place.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from trafficsigns.core.errors import PipelineError
from trafficsigns.core.fsutil import atomic_path, write_text
from trafficsigns.data.h5store import read_dataset
from trafficsigns.modeling.metrics import classification_metrics
from trafficsigns.modeling.models import METADATA_MEMBER, load_model, read_model_metadata

# format -> its name inside the export folder
EXPORT_FILES = {
    "saved_model": "saved_model",
    "tflite_float32": "model_float32.tflite",
    "tflite_int8": "model_int8.tflite",
}


def export_savedmodel(model: keras.Model, out_dir: str | Path) -> Path:
    """A SavedModel folder whose `serve` endpoint maps float32 images to class probabilities."""
    with atomic_path(out_dir) as tmp:
        tmp.unlink()  # atomic_path made a placeholder file; the exporter creates the folder itself
        model.export(tmp, format="tf_saved_model", verbose=False)
    return Path(out_dir)


def export_tflite(model: keras.Model, path: str | Path, representative: np.ndarray | None = None) -> Path:
    """A TFLite file: float32 if `representative` is None, else full-integer int8.

    The int8 model is quantised from the activation ranges seen on `representative` (images as the
    model takes them, e.g. a sample of the training split); its input and output are int8 too, as
    integer-only accelerators need, with their scale and zero point in the file (`tflite_predict`
    applies them). Only built-in ops are allowed, so the file runs on any TFLite runtime.
    """
    if representative is None:
        settings = {"target_spec": {"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS]}}
    else:
        images = np.asarray(representative, dtype=np.float32)
        settings = {
            "optimizations": [tf.lite.Optimize.DEFAULT],
            "representative_dataset": lambda: ([image[None]] for image in images),  # one batch of 1 per step
            "target_spec": {"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]},
            "inference_input_type": tf.int8,
            "inference_output_type": tf.int8,
        }
    with atomic_path(path, suffix=".tflite") as tmp:  # the exporter insists on the extension
        model.export(tmp, format="litert", verbose=False, **settings)
    return Path(path)


def _quantize(x: np.ndarray, detail: dict) -> np.ndarray:
    """Float input -> the tensor's type: real = (q - zero_point) * scale, so q = round(real / scale) + zero_point."""
    dtype = detail["dtype"]
    if not np.issubdtype(dtype, np.integer):
        return x.astype(dtype)
    scale, zero_point = detail["quantization"]
    limits = np.iinfo(dtype)
    return np.clip(np.round(x / scale) + zero_point, limits.min, limits.max).astype(dtype)


def _dequantize(q: np.ndarray, detail: dict) -> np.ndarray:
    if not np.issubdtype(detail["dtype"], np.integer):
        return q.astype(np.float32)
    scale, zero_point = detail["quantization"]
    return ((q.astype(np.float32) - zero_point) * scale).astype(np.float32)


def tflite_interpreter(path: str | Path) -> tf.lite.Interpreter:
    with warnings.catch_warnings():
        # Its deprecation points to ai_edge_litert, not a dependency here; TensorFlow 2.21 still ships it.
        warnings.filterwarnings("ignore", message=r"\s*Warning: tf.lite.Interpreter is deprecated")
        return tf.lite.Interpreter(model_path=str(path))


def tflite_predict(path: str | Path, x: np.ndarray, batch_size: int) -> np.ndarray:
    """Class probabilities (float32) of a TFLite classifier on float images x, in batches."""
    interpreter = tflite_interpreter(path)
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    probs = []
    for start in range(0, len(x), batch_size):
        batch = x[start : start + batch_size]
        interpreter.resize_tensor_input(inp["index"], batch.shape)  # the file is saved for batch 1
        interpreter.allocate_tensors()
        interpreter.set_tensor(inp["index"], _quantize(batch, inp))
        interpreter.invoke()
        probs.append(_dequantize(interpreter.get_tensor(out["index"]), out))
    return np.concatenate(probs)


def savedmodel_predict(path: str | Path, x: np.ndarray, batch_size: int) -> np.ndarray:
    """Class probabilities of an exported SavedModel on float images x, in batches."""
    loaded = tf.saved_model.load(str(path))  # keep it referenced: `serve` only weakly holds the variables
    return np.concatenate([loaded.serve(x[i : i + batch_size]).numpy() for i in range(0, len(x), batch_size)])


PREDICTORS: dict[str, Callable[[Path, np.ndarray, int], np.ndarray]] = {
    "saved_model": savedmodel_predict,
    "tflite_float32": tflite_predict,
    "tflite_int8": tflite_predict,
}


def size_bytes(path: str | Path) -> int:
    """Size of a file, or of all files under a folder."""
    path = Path(path)
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size


def _read_split(model_path: Path, dataset_path: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) of a split, refusing a dataset prepared otherwise than the model's training data."""
    ds = read_dataset(dataset_path, splits=(split,), expected=read_model_metadata(model_path)["preprocessing"])
    return ds.x[split], ds.y[split]


def as_float32(model: keras.Model) -> keras.Model:
    """The same network and weights computing in float32: TFLite cannot convert a model trained under
    `train.mixed_precision` (bfloat16 or float16 layers); its variables are float32 already."""
    if all(layer.dtype_policy.name == "float32" for layer in model.layers):
        return model
    copy = keras.models.clone_model(
        model, clone_function=lambda layer: layer.__class__.from_config({**layer.get_config(), "dtype": "float32"})
    )
    copy.set_weights(model.get_weights())
    return copy


def export_all(
    model_path: str | Path,
    dataset_path: str | Path,
    out_dir: str | Path,
    representative_count: int,
    seed: int = 0,
) -> dict[str, dict]:
    """Export the model in every format into out_dir; returns {format: {path, bytes}}.

    The int8 calibration uses `representative_count` training images drawn with `seed` (the same
    images every run, so the export is reproducible). `out_dir/trafficsigns.json` holds the model's
    metadata: class names and the preprocessing any user of the exports must apply.
    """
    model_path, out_dir = Path(model_path), Path(out_dir)
    model = as_float32(load_model(model_path))
    x_train, _ = _read_split(model_path, Path(dataset_path), "train")
    pick = np.random.default_rng(seed).choice(len(x_train), min(representative_count, len(x_train)), replace=False)
    representative = x_train[np.sort(pick)]
    paths = {
        "saved_model": export_savedmodel(model, out_dir / EXPORT_FILES["saved_model"]),
        "tflite_float32": export_tflite(model, out_dir / EXPORT_FILES["tflite_float32"]),
        "tflite_int8": export_tflite(model, out_dir / EXPORT_FILES["tflite_int8"], representative),
    }
    write_text(out_dir / METADATA_MEMBER, json.dumps(read_model_metadata(model_path), indent=2) + "\n")
    return {fmt: {"path": str(path), "bytes": size_bytes(path)} for fmt, path in paths.items()}


def evaluate_exports(
    model_path: str | Path, export_dir: str | Path, dataset_path: str | Path, batch_size: int
) -> dict[str, dict]:
    """Test accuracy and size of the Keras model and of each export in export_dir: {format: {accuracy, bytes}}."""
    model_path, export_dir = Path(model_path), Path(export_dir)
    x, y = _read_split(model_path, Path(dataset_path), "test")
    scores = {"keras": _score(load_model(model_path).predict(x, batch_size=batch_size, verbose=0), y, model_path)}
    for fmt, name in EXPORT_FILES.items():
        path = export_dir / name
        if not path.exists():
            raise PipelineError(f"{path}: export not found (run the export stage first)")
        scores[fmt] = _score(PREDICTORS[fmt](path, x, batch_size), y, path)
    return scores


def _score(probs: np.ndarray, y: np.ndarray, path: Path) -> dict:
    return {"accuracy": classification_metrics(probs, y)[0]["accuracy"], "bytes": size_bytes(path)}
