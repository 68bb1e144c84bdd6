"""The NumPy reference ops: forward equals Keras with the same weights, backward equals finite differences."""

import keras
import numpy as np
import pytest

from trafficsigns.explain import numpy_nn as nn
from trafficsigns.explain.digits import render_digits

rng = np.random.default_rng(0)


def randn(*shape, dtype=np.float32):
    return rng.standard_normal(shape).astype(dtype)


def keras_layer(layer, input_shape, weights=()):
    layer.build((None, *input_shape))
    layer.set_weights(list(weights))
    return lambda x: keras.ops.convert_to_numpy(layer(x))


# --------------------------------------------------------------------------------------------
# Forward == Keras (float32, atol 1e-5)


@pytest.mark.parametrize("padding", ["valid", "same"])
@pytest.mark.parametrize("strides", [1, 2, (2, 1)])
@pytest.mark.parametrize("kernel", [(3, 3), (2, 3)])
def test_conv2d_equals_keras(padding, strides, kernel):
    x, w, b = randn(2, 7, 8, 3), randn(*kernel, 3, 4), randn(4)
    layer = keras_layer(keras.layers.Conv2D(4, kernel, strides=strides, padding=padding), x.shape[1:], (w, b))
    np.testing.assert_allclose(nn.conv2d(x, w, b, strides, padding), layer(x), atol=1e-5)


def test_relu_equals_keras():
    x = randn(2, 5, 5, 3)
    np.testing.assert_allclose(nn.relu(x), keras_layer(keras.layers.ReLU(), x.shape[1:])(x), atol=1e-5)


@pytest.mark.parametrize("pool, strides", [(2, None), (3, 1), (2, (1, 2)), ((3, 2), 2)])
def test_maxpool2d_equals_keras(pool, strides):
    x = randn(2, 7, 8, 3)
    layer = keras_layer(keras.layers.MaxPooling2D(pool, strides=strides), x.shape[1:])
    np.testing.assert_allclose(nn.maxpool2d(x, pool, strides), layer(x), atol=1e-5)


def test_dense_equals_keras():
    x, w, b = randn(4, 6), randn(6, 3), randn(3)
    layer = keras_layer(keras.layers.Dense(3), x.shape[1:], (w, b))
    np.testing.assert_allclose(nn.dense(x, w, b), layer(x), atol=1e-5)


def test_softmax_cross_entropy_equals_keras():
    z, y = 3 * randn(5, 4), rng.integers(0, 4, 5)
    np.testing.assert_allclose(nn.softmax(z), keras_layer(keras.layers.Softmax(), z.shape[1:])(z), atol=1e-5)
    expected = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(y, z)
    np.testing.assert_allclose(nn.softmax_cross_entropy(z, y), keras.ops.convert_to_numpy(expected), atol=1e-5)


def test_softmax_cross_entropy_survives_huge_logits():
    z = np.array([[1000.0, 0.0], [0.0, -1000.0]])
    assert nn.softmax_cross_entropy(z, np.array([1, 1])) == pytest.approx(1000 / 2 + 1000 / 2)


# --------------------------------------------------------------------------------------------
# Backward == central finite differences (float64). A random upstream gradient r makes the scalar
# L = Σ r · f(inputs), whose exact gradient is what backward(dy=r) returns.


def numerical_grad(f, a: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """∂f/∂a ≈ (f(a + ε e_k) - f(a - ε e_k)) / 2ε for every element k of a (a is changed and restored)."""
    grad = np.zeros_like(a)
    for k in np.ndindex(a.shape):
        orig = a[k]
        a[k] = orig + eps
        plus = f()
        a[k] = orig - eps
        minus = f()
        a[k] = orig
        grad[k] = (plus - minus) / (2 * eps)
    return grad


def check_grads(forward, backward, *inputs):
    r = randn(*forward(*inputs).shape, dtype=np.float64)
    analytic = backward(r, *inputs)
    for a, g in zip(inputs, analytic):
        np.testing.assert_allclose(g, numerical_grad(lambda: np.sum(r * forward(*inputs)), a), rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("padding", ["valid", "same"])
@pytest.mark.parametrize("stride", [1, 2])
def test_conv2d_backward(padding, stride):
    check_grads(
        lambda x, w, b: nn.conv2d(x, w, b, stride, padding),
        lambda dy, x, w, b: nn.conv2d_backward(dy, x, w, stride, padding),
        randn(2, 5, 6, 2, dtype=np.float64),
        randn(3, 2, 2, 3, dtype=np.float64),
        randn(3, dtype=np.float64),
    )


def test_relu_backward():
    check_grads(nn.relu, lambda dy, x: [nn.relu_backward(dy, x)], randn(2, 4, 4, 3, dtype=np.float64))


@pytest.mark.parametrize("pool, stride", [(2, None), (3, 1), (2, (1, 2))])
def test_maxpool2d_backward(pool, stride):
    check_grads(
        lambda x: nn.maxpool2d(x, pool, stride),
        lambda dy, x: [nn.maxpool2d_backward(dy, x, pool, stride)],
        randn(2, 6, 7, 2, dtype=np.float64),
    )


def test_dense_backward():
    check_grads(
        nn.dense,
        lambda dy, x, w, b: nn.dense_backward(dy, x, w),
        randn(4, 5, dtype=np.float64),
        randn(5, 3, dtype=np.float64),
        randn(3, dtype=np.float64),
    )


def test_softmax_cross_entropy_backward():
    z, y = randn(5, 4, dtype=np.float64), rng.integers(0, 4, 5)
    np.testing.assert_allclose(
        nn.softmax_cross_entropy_backward(z, y),
        numerical_grad(lambda: nn.softmax_cross_entropy(z, y), z),
        rtol=1e-5,
        atol=1e-8,
    )


def test_tiny_cnn_backpropagation():
    params = {k: v.astype(np.float64) for k, v in nn.init_tiny_cnn((6, 7, 2), 3, filters=2, seed=1).items()}
    params = {k: v + 0.1 * randn(*v.shape, dtype=np.float64) for k, v in params.items()}  # nonzero biases
    x, y = randn(3, 6, 7, 2, dtype=np.float64), np.array([0, 2, 1])
    _, grads = nn.tiny_cnn_loss_and_grads(params, x, y)
    for name, value in params.items():
        expected = numerical_grad(lambda: nn.tiny_cnn_loss_and_grads(params, x, y)[0], value)
        np.testing.assert_allclose(grads[name], expected, rtol=1e-5, atol=1e-8, err_msg=name)


# --------------------------------------------------------------------------------------------
# Training


def test_sgd_lowers_the_loss_on_digits():
    x, y = render_digits(400, seed=3)
    x = x[..., None].astype(np.float32) / 255
    params = nn.init_tiny_cnn(x.shape[1:], 10, filters=4, seed=0)
    trained, history = nn.sgd(params, x[:300], y[:300], batch_size=10, epochs=2, lr=0.1, eval_every=100)
    assert history.examples == [0, 100, 200, 300, 400, 500, 600]
    assert history.updates == 2 * 300 // 10
    assert history.loss[-1] < 0.75 * history.loss[0]
    assert np.mean(nn.tiny_cnn_logits(trained, x[300:]).argmax(axis=1) == y[300:]) > 0.3  # chance: 0.1
    assert all(np.array_equal(params[k], nn.init_tiny_cnn(x.shape[1:], 10, filters=4, seed=0)[k]) for k in params)


def test_sgd_is_deterministic_and_batch_n_is_gradient_descent():
    x, y = randn(20, 6, 6, 1), rng.integers(0, 3, 20)
    params = nn.init_tiny_cnn((6, 6, 1), 3, filters=2)
    first, _ = nn.sgd(params, x, y, batch_size=8, epochs=2, lr=0.1, seed=5)
    second, _ = nn.sgd(params, x, y, batch_size=8, epochs=2, lr=0.1, seed=5)
    assert all(np.array_equal(first[k], second[k]) for k in params)
    gd, history = nn.sgd(params, x, y, batch_size=20, epochs=1, lr=0.1)
    _, grads = nn.tiny_cnn_loss_and_grads(params, x, y)
    assert history.updates == 1
    for k in params:
        np.testing.assert_allclose(gd[k], params[k] - 0.1 * grads[k], atol=1e-6)
