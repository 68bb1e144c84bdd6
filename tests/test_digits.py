"""The offline MNIST-like digits: deterministic, MNIST's format, all classes, and learnable."""

import numpy as np

from trafficsigns.explain.digits import render_digits, write_mnist_npz


def test_same_seed_same_digits_other_seed_or_stream_other_digits():
    x, y = render_digits(12, seed=7)
    x_again, y_again = render_digits(12, seed=7)
    assert np.array_equal(x, x_again) and np.array_equal(y, y_again)
    assert not np.array_equal(x, render_digits(12, seed=8)[0])
    assert not np.array_equal(x, render_digits(12, seed=7, stream=1)[0])


def test_shapes_dtypes_and_balanced_classes():
    x, y = render_digits(30, seed=0)
    assert x.shape == (30, 28, 28) and x.dtype == np.uint8
    assert y.shape == (30,) and y.dtype == np.int64
    assert np.array_equal(np.bincount(y), [3] * 10)
    assert render_digits(0, seed=0)[0].shape == (0, 28, 28)


def test_looks_like_mnist_white_ink_on_black_centred():
    x = render_digits(50, seed=0)[0].astype(np.float64)
    assert (x.max(axis=(1, 2)) == 255).all()
    assert (x[:, [0, -1], :] == 0).all() and (x[:, :, [0, -1]] == 0).all()  # a dark border, as in MNIST
    assert 0.1 < (x > 0).mean() < 0.4  # mostly background
    centre_of_mass = (np.indices((28, 28))[:, None] * x).sum(axis=(2, 3)) / x.sum(axis=(1, 2))
    assert np.abs(centre_of_mass - 13.5).max() < 2.5


def test_mnist_npz_has_the_keras_keys_and_dtypes(tmp_path):
    path = tmp_path / "mnist.npz"
    write_mnist_npz(path, n_train=20, n_test=10, seed=0)
    with np.load(path) as f:
        assert sorted(f.files) == ["x_test", "x_train", "y_test", "y_train"]
        assert f["x_train"].shape == (20, 28, 28) and f["x_test"].shape == (10, 28, 28)
        assert f["y_train"].shape == (20,) and f["y_test"].shape == (10,)
        assert {f[k].dtype for k in f.files} == {np.dtype(np.uint8)}
        assert not np.array_equal(f["x_train"][:10], f["x_test"])
    assert [p.name for p in tmp_path.iterdir()] == ["mnist.npz"]  # no temporary left behind


def test_digits_are_learnable_by_nearest_centroid():
    x, y = render_digits(700, seed=1)
    x = x.reshape(len(x), -1) / 255
    train, test = slice(0, 500), slice(500, None)
    centroids = np.stack([x[train][y[train] == d].mean(axis=0) for d in range(10)])
    predicted = ((x[test, None, :] - centroids) ** 2).sum(axis=2).argmin(axis=1)
    assert np.mean(predicted == y[test]) > 0.4  # chance: 0.1
