"""Exports of a trained model: SavedModel and TFLite float32 agree with Keras; int8 costs under a point."""

import json

import h5py
import keras
import numpy as np
import pytest

from tests.helpers import QUICK_TRAINING, run_stages, tiny_params
from trafficsigns.core.errors import PipelineError
from trafficsigns.data.h5store import read_dataset
from trafficsigns.modeling.export import (
    EXPORT_FILES,
    as_float32,
    evaluate_exports,
    export_all,
    export_savedmodel,
    savedmodel_predict,
    tflite_interpreter,
    tflite_predict,
)
from trafficsigns.modeling.models import METADATA_MEMBER, read_model_metadata

PARAMS = tiny_params(QUICK_TRAINING)  # light dropout trains the small CNN well in 12 epochs


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    """(model, dataset, export folder) from the real stages, on synthetic data big enough that one
    point of test accuracy is ~10 images; light dropout trains the small CNN well in 12 epochs."""
    from trafficsigns.data.synthetic import write_synthetic_gtsrb

    project = tmp_path_factory.mktemp("export")
    write_synthetic_gtsrb(
        project / "data" / "raw",
        seed=2,
        train_tracks_per_class=4,
        test_tracks_per_class=3,
        frames_per_track=8,
        workers=1,
    )
    run_stages(project, PARAMS, "prepare", "augment", "train")
    return project / "models" / "best.keras", project / "data" / "prepared" / "dataset.h5", project / "export"


@pytest.fixture(scope="module")
def exports(paths):
    return export_all(*paths, representative_count=PARAMS.export.representative_count)


def test_export_all_writes_every_format_and_the_metadata(paths, exports):
    model, _, out = paths
    assert set(exports) == set(EXPORT_FILES)
    for fmt, export in exports.items():
        assert export["path"] == str(out / EXPORT_FILES[fmt]) and export["bytes"] > 0
    assert exports["tflite_float32"]["bytes"] == (out / EXPORT_FILES["tflite_float32"]).stat().st_size
    assert exports["tflite_int8"]["bytes"] * 3 < exports["tflite_float32"]["bytes"]
    assert json.loads((out / METADATA_MEMBER).read_text()) == read_model_metadata(model)
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")], "temporary files left behind"


def test_savedmodel_and_float_tflite_predict_like_keras(paths, exports):
    model, dataset, _ = paths
    x = read_dataset(dataset, splits=("test",)).x["test"]
    # the exports compute in float32 what the model computes (in bfloat16 where it was trained so)
    expected = as_float32(keras.models.load_model(model)).predict(x, verbose=0)
    # batch 100 leaves a partial last batch: the TFLite input is resized per batch
    for probs in (
        savedmodel_predict(exports["saved_model"]["path"], x, 100),
        tflite_predict(exports["tflite_float32"]["path"], x, 100),
    ):
        assert np.allclose(probs, expected, atol=1e-5)
        assert (probs.argmax(axis=1) == expected.argmax(axis=1)).all(), "an export classifies an image otherwise"


def test_int8_is_integer_only_and_costs_under_one_point(paths, exports):
    model, dataset, out = paths
    interpreter = tflite_interpreter(exports["tflite_int8"]["path"])
    assert interpreter.get_input_details()[0]["dtype"] == np.int8
    assert interpreter.get_output_details()[0]["dtype"] == np.int8

    scores = evaluate_exports(model, out, dataset, batch_size=128)
    assert set(scores) == {"keras", *EXPORT_FILES}
    keras_accuracy = scores["keras"]["accuracy"]
    assert keras_accuracy > 0.5, "the model must be trained for accuracy to mean anything"
    assert scores["saved_model"]["accuracy"] == scores["tflite_float32"]["accuracy"]
    assert abs(scores["tflite_float32"]["accuracy"] - keras_accuracy) <= 0.01  # float32 of a mixed-precision model
    assert abs(scores["tflite_int8"]["accuracy"] - keras_accuracy) <= 0.01
    assert scores["keras"]["bytes"] == model.stat().st_size
    assert {fmt: s["bytes"] for fmt, s in scores.items() if fmt != "keras"} == {
        fmt: e["bytes"] for fmt, e in exports.items()
    }


def test_dataset_prepared_otherwise_is_refused(paths, tmp_path):
    model, dataset, _ = paths
    other = tmp_path / "dataset.h5"
    other.write_bytes(dataset.read_bytes())
    with h5py.File(other, "a") as f:
        f["meta"].attrs["mode"] = json.dumps("L-HE")
    with pytest.raises(PipelineError, match="mode: file has 'L-HE'"):
        evaluate_exports(model, paths[2], other, batch_size=PARAMS.evaluate.batch_size)


def test_a_failed_export_leaves_the_previous_one_and_no_temporary(tmp_path, monkeypatch):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    target = tmp_path / "saved_model"
    export_savedmodel(model, target)
    before = sorted(p.relative_to(target) for p in target.rglob("*"))

    def fail(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(model, "export", fail)
    with pytest.raises(RuntimeError):
        export_savedmodel(model, target)
    assert sorted(p.relative_to(target) for p in target.rglob("*")) == before
    assert [p.name for p in tmp_path.iterdir()] == ["saved_model"]
