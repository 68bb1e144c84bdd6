"""The real training loop on tiny data: every model trains, runs are deterministic, outputs are complete."""
import contextlib
import json
import shutil

import keras
import numpy as np
import pytest

from tests.conftest import TINY_PARAMS
from trafficsigns.config import ModelParams, TrainParams, parse_params
from trafficsigns.models import ARCHITECTURES, build_model


@pytest.mark.parametrize("name", list(ARCHITECTURES))
@pytest.mark.parametrize("shape", [(24, 24, 1), (28, 28, 1), (32, 32, 3), (48, 48, 3)])
def test_every_model_builds_and_trains_a_step(name, shape):
    model = build_model(ModelParams(name=name, filters=4, dense=16), shape, 43)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    x = np.random.default_rng(0).random((8, *shape), dtype=np.float32)
    loss = model.train_on_batch(x, np.arange(8))
    assert np.isfinite(loss)
    assert model.output_shape == (None, 43)


def test_filters_and_dense_scale_the_model():
    v1 = build_model(ModelParams(name="v1"), (24, 24, 1), 43)
    assert [layer.filters for layer in v1.layers if hasattr(layer, "filters")] == [96, 192]
    narrow = build_model(ModelParams(name="v1", filters=32, dense=100), (24, 24, 1), 43)
    assert [layer.filters for layer in narrow.layers if hasattr(layer, "filters")] == [32, 64]
    assert narrow.layers[-3].units == 100
    small = build_model(ModelParams(name="mnist_cnn"), (28, 28, 1), 10)
    assert [layer.filters for layer in small.layers if hasattr(layer, "filters")] == [8, 16]


def run_train_and_evaluate(project, dataset, params):
    from stages import evaluate, train

    (project / "data" / "prepared").mkdir(parents=True)
    shutil.copy(dataset, project / "data" / "prepared" / "dataset.h5")
    with contextlib.chdir(project):
        train.main(params)
        evaluate.main(params)
    return json.loads((project / "metrics" / "evaluate.json").read_text())


def test_train_and_evaluate_are_deterministic_and_complete(tiny_dataset, tmp_path):
    params = parse_params(TINY_PARAMS)
    first = run_train_and_evaluate(tmp_path / "a", tiny_dataset, params)
    second = run_train_and_evaluate(tmp_path / "b", tiny_dataset, params)
    assert first == second, "same params + same data must give the same metrics on CPU"
    a, b = (keras.models.load_model(tmp_path / p / "models" / "best.keras") for p in "ab")
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        assert np.array_equal(wa, wb)

    project = tmp_path / "a"
    live = json.loads((project / "metrics" / "train" / "metrics.json").read_text())
    assert {"train", "val", "epoch_seconds", "images_per_second", "best_val_accuracy"} <= set(live)
    assert live["step"] == TINY_PARAMS["train"]["epochs"] - 1
    for curve in ("train/accuracy", "val/accuracy", "train/loss", "val/loss", "images_per_second"):
        rows = (project / "metrics" / "train" / "plots" / "metrics" / f"{curve}.tsv").read_text().splitlines()
        assert len(rows) == 1 + TINY_PARAMS["train"]["epochs"]
    assert (project / "models" / "last.keras").exists()
    assert set(first) == {"accuracy", "top5_accuracy", "macro_f1", "loss", "images"}
    plots = project / "plots" / "evaluate"
    confusion = (plots / "confusion.csv").read_text().splitlines()
    assert confusion[0] == "actual,predicted" and len(confusion) == 1 + first["images"]
    for png in ("per_class_accuracy.png", "confusion_matrix.png", "worst_errors.png"):
        assert (plots / png).read_bytes()[:4] == b"\x89PNG"


def test_different_seed_gives_different_model(tiny_dataset, tmp_path):
    base = parse_params(TINY_PARAMS)
    other = base.model_copy(update={"train": TrainParams(**{**TINY_PARAMS["train"], "seed": 1})})
    assert run_train_and_evaluate(tmp_path / "a", tiny_dataset, base) != \
        run_train_and_evaluate(tmp_path / "b", tiny_dataset, other)
