"""The `demystify` command: its figures with and without the optional inputs, and its errors."""

import logging

import numpy as np
import pytest
from PIL import Image

from trafficsigns.cli import main
from trafficsigns.data.h5store import SPLITS, Dataset, write_dataset
from trafficsigns.explain.demystify import FirstConv

FAST = ["--digits", "60", "--epochs", "1"]  # figure 4 on a toy problem: the test is about the plumbing


def pngs(folder):
    names = sorted(p.name for p in folder.iterdir())
    for name in names:
        with Image.open(folder / name) as img:
            assert img.format == "PNG" and min(img.size) > 100
    return names


def test_without_model_or_dataset_falls_back_and_says_so(tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)  # no models/best.keras, no data/prepared/dataset.h5 here
    with caplog.at_level(logging.INFO, logger="trafficsigns.explain.demystify"):
        assert main(["demystify", *FAST]) == 0
    assert pngs(tmp_path / "plots" / "demystify") == ["1_classic_kernels.png", "3_relu_maxpool.png", "4_gd_vs_sgd.png"]
    assert "no model at models/best.keras: skipping figure 2" in caplog.text
    assert "no dataset at data/prepared/dataset.h5: using a synthetic digit" in caplog.text
    assert "pure SGD (batch 1): 60 updates" in caplog.text


@pytest.mark.parametrize("option", ["--model", "--dataset"])
def test_an_explicit_input_that_is_missing_is_an_error(tmp_path, capsys, option):
    assert main(["demystify", "--out", str(tmp_path / "out"), option, str(tmp_path / "missing"), *FAST]) == 1
    assert capsys.readouterr().err.startswith(f"error: {tmp_path / 'missing'}: {option[2:]} not found")
    assert not (tmp_path / "out").exists()


@pytest.fixture
def rgb_model_and_dataset(tmp_path):
    """A 3-channel model whose first layer is a strided, same-padded Conv2D, and a tiny RGB dataset."""
    import keras

    model = keras.Sequential(
        [
            keras.Input((12, 12, 3)),
            keras.layers.Conv2D(5, 3, strides=2, padding="same", activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(2, activation="softmax"),
        ],
        name="toy",
    )
    model.save(tmp_path / "toy.keras")
    rng = np.random.default_rng(0)
    ds = Dataset(
        x={s: rng.random((4, 12, 12, 3), dtype=np.float32) for s in SPLITS},
        y={s: np.array([0, 1, 0, 1]) for s in SPLITS},
        class_names=["a", "b"],
    )
    write_dataset(tmp_path / "dataset.h5", ds)
    return model, tmp_path / "toy.keras", tmp_path / "dataset.h5"


def test_the_model_first_layer_in_numpy_equals_keras(rgb_model_and_dataset):
    model, model_path, _ = rgb_model_and_dataset
    layer = FirstConv.from_model(model_path)
    assert (layer.w.shape, layer.stride, layer.padding) == ((3, 3, 3, 5), (2, 2), "same")
    x = np.random.default_rng(1).random((2, 12, 12, 3), dtype=np.float32)
    np.testing.assert_allclose(layer(x), model.layers[0](x), atol=1e-5)


def test_with_model_and_dataset_all_figures(rgb_model_and_dataset, tmp_path):
    _, model_path, dataset_path = rgb_model_and_dataset
    out = tmp_path / "figures"
    assert (
        main(["demystify", "--out", str(out), "--model", str(model_path), "--dataset", str(dataset_path), *FAST]) == 0
    )
    assert pngs(out) == [
        "1_classic_kernels.png",
        "2_first_layer_feature_maps.png",
        "2_first_layer_kernels.png",
        "3_relu_maxpool.png",
        "4_gd_vs_sgd.png",
    ]


def test_the_stage_figures_are_the_same_bytes_every_run(tmp_path):
    """The pipeline draws figure 4 against updates, not wall time: a re-run gives the same file."""
    from trafficsigns.explain.demystify import gd_vs_sgd_figure

    a, b = (gd_vs_sgd_figure(tmp_path / f"{n}.png", seed=0, digits=60, epochs=1, wall_time=False) for n in "ab")
    assert a.read_bytes() == b.read_bytes()
