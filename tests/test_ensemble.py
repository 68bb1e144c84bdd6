"""The committee: the average of its members' saved predictions, scored next to each member's."""

import contextlib
import json
import shutil

import keras
import numpy as np
import pytest

from tests.helpers import make_project, tiny_params
from trafficsigns.core.errors import PipelineError
from trafficsigns.data.h5store import read_dataset
from trafficsigns.modeling.ensemble import PREPROCESSING, committee_probabilities, committee_scores
from trafficsigns.modeling.models import save_model

# Saved test-set predictions of two members (4 images, 3 classes) and the true labels.
A = np.array([[0.8, 0.1, 0.1], [0.1, 0.5, 0.4], [0.2, 0.2, 0.6], [0.5, 0.4, 0.1]])
B = np.array([[0.2, 0.7, 0.1], [0.1, 0.2, 0.7], [0.3, 0.3, 0.4], [0.1, 0.8, 0.1]])
Y = np.array([0, 2, 2, 1])


def test_committee_of_saved_predictions_equals_the_hand_computed_average(tmp_path):
    np.save(tmp_path / "a.npy", A), np.save(tmp_path / "b.npy", B)
    saved = {name: np.load(tmp_path / f"{name}.npy") for name in ("a", "b")}
    # by hand: (A + B) / 2 = [.5 .4 .1], [.1 .35 .55], [.25 .25 .5], [.3 .6 .1] -> classes 0, 2, 2, 1: all right
    np.testing.assert_allclose(
        committee_probabilities(list(saved.values())),
        [[0.5, 0.4, 0.1], [0.1, 0.35, 0.55], [0.25, 0.25, 0.5], [0.3, 0.6, 0.1]],
    )
    scores = committee_scores(saved, Y)["ensemble"]  # DVC's columns: ensemble.test.accuracy, ...
    assert scores["members"]["a"]["test"]["accuracy"] == 0.5  # A says 0, 1, 2, 0
    assert scores["members"]["b"]["test"]["accuracy"] == 0.75  # B says 1, 2, 2, 1
    assert scores["test"] == {"accuracy": 1.0, "macro_f1": 1.0}


def test_members_must_predict_the_same_shape():
    with pytest.raises(PipelineError, match="differently shaped"):
        committee_probabilities([A, B[:, :2]])


def _tiny_model(ds, seed: int, path, **preprocessing):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input(ds.x["test"].shape[1:]),
            keras.layers.Flatten(),
            keras.layers.Dense(ds.num_classes, activation="softmax"),
        ]
    )
    meta = {"class_names": ds.class_names, "preprocessing": {**{k: ds.meta[k] for k in PREPROCESSING}, **preprocessing}}
    save_model(model, path, meta)
    return model


@pytest.fixture
def project(tiny_dataset, tmp_path):
    """A project with the tiny dataset, two untrained members and models/best.keras (= member 1)."""
    make_project(tmp_path, prepared=tiny_dataset)
    ds = read_dataset(tiny_dataset, splits=("test",))
    members = [_tiny_model(ds, seed, tmp_path / f"m{seed}.keras") for seed in (1, 2)]
    (tmp_path / "models").mkdir()
    shutil.copy(tmp_path / "m1.keras", tmp_path / "models" / "best.keras")
    return tmp_path, ds, members


def test_evaluate_writes_each_member_and_the_committee(project):
    from trafficsigns.stages import evaluate

    root, ds, members = project
    x, y = ds.x["test"], ds.y["test"]
    probs = [m.predict(x, verbose=0) for m in members]
    with contextlib.chdir(root):
        evaluate.main(tiny_params())
        alone = (root / "metrics" / "evaluate.json").read_text()
        assert json.loads((root / "metrics" / "ensemble.json").read_text()) == {}, "no committee: no DVC column"
        evaluate.main(tiny_params({"evaluate": {"ensemble": ["m1.keras", "m2.keras"]}}))
        scores = json.loads((root / "metrics" / "ensemble.json").read_text())
        assert (root / "metrics" / "evaluate.json").read_text() == alone, "a committee must not change evaluate.json"
    for name, p in zip(("m1.keras", "m2.keras"), probs):
        assert scores["ensemble"]["members"][name]["test"]["accuracy"] == pytest.approx(
            (p.argmax(1) == y).mean(), abs=1e-12
        )
    by_hand = ((probs[0] + probs[1]) / 2).argmax(1)
    assert scores["ensemble"]["test"]["accuracy"] == pytest.approx((by_hand == y).mean(), abs=1e-12)


def test_a_member_prepared_otherwise_or_missing_is_refused(project):
    from trafficsigns.stages import evaluate

    root, ds, _ = project
    _tiny_model(ds, 3, root / "rgb.keras", mode="RGB")
    with contextlib.chdir(root):
        # a file says nothing of where its prepared data is: its experiment would
        with pytest.raises(PipelineError, match="rgb.keras was trained on .*'RGB'.* name the experiment"):
            evaluate.main(tiny_params({"evaluate": {"ensemble": ["m1.keras", "rgb.keras"]}}))
        with pytest.raises(PipelineError, match="model file gone.keras not found"):
            evaluate.main(tiny_params({"evaluate": {"ensemble": ["m1.keras", "gone.keras"]}}))
