"""A CNN in plain NumPy: the reference maths behind Keras' Conv2D, ReLU, MaxPooling2D, Dense and
softmax cross-entropy, their backward passes, and mini-batch SGD training a tiny CNN with them.

Layout is Keras': images NHWC (batch, height, width, channels), conv kernels HWIO
(kernel height, kernel width, in channels, out channels), dense kernels (in, out).
Each backward function takes dy = ∂L/∂y, the gradient of a scalar loss L with respect to the
forward output, and returns the gradients with respect to the forward inputs and weights.

A "convolution" in deep learning is a cross-correlation (the kernel is not flipped), as in Keras.
Convolution and pooling are written as a sum over kernel taps (i, j): tap (i, j) sees the strided
slice `_tap` of the input, so each op is one loop of whole-array operations.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

Pair = int | tuple[int, int]


def _pair(v: Pair) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


def _tap(i: int, j: int, stride: tuple[int, int], out_hw: tuple[int, int]) -> tuple[slice, ...]:
    """Index of x[n, s_h·p + i, s_w·q + j, :] for every output position (p, q): what tap (i, j) sees."""
    (sh, sw), (ho, wo) = stride, out_hw
    return np.s_[:, i : i + sh * ho : sh, j : j + sw * wo : sw, :]


def _out_size(size: int, k: int, s: int) -> int:
    return (size - k) // s + 1


def _same_padding(size: int, k: int, s: int) -> tuple[int, int]:
    """Keras/TensorFlow "same": out = ⌈size/s⌉, padding split evenly with the odd pixel at the end."""
    total = max((-(-size // s) - 1) * s + k - size, 0)
    return total // 2, total - total // 2


def _pad(x: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int], padding: str):
    """Zero-pad x (N, H, W, C) for `padding` in {"valid", "same"}; also return the (top, left) padding."""
    if padding == "valid":
        return x, (0, 0)
    if padding != "same":
        raise ValueError(f"padding must be 'valid' or 'same', not {padding!r}")
    top_bottom, left_right = (_same_padding(n, k, s) for n, k, s in zip(x.shape[1:3], kernel, stride))
    return np.pad(x, ((0, 0), top_bottom, left_right, (0, 0))), (top_bottom[0], left_right[0])


# --------------------------------------------------------------------------------------------
# Layers


def conv2d(x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: Pair = 1, padding: str = "valid") -> np.ndarray:
    """y[n,p,q,f] = b[f] + Σ_{i,j,c} x̃[n, s_h·p + i, s_w·q + j, c] · w[i,j,c,f], x̃ = x zero-padded.

    x (N, H, W, C), w (kh, kw, C, F), b (F,) -> y (N, Ho, Wo, F).
    """
    kernel, stride = w.shape[:2], _pair(stride)
    xp, _ = _pad(x, kernel, stride, padding)
    out_hw = tuple(_out_size(n, k, s) for n, k, s in zip(xp.shape[1:3], kernel, stride))
    return sum(xp[_tap(i, j, stride, out_hw)] @ w[i, j] for i, j in np.ndindex(*kernel)) + b


def conv2d_backward(dy: np.ndarray, x: np.ndarray, w: np.ndarray, stride: Pair = 1, padding: str = "valid"):
    """Each tap (i, j) is a dense layer from the slice it sees to y, so it contributes
    ∂L/∂x̃[tap] += dy · w[i,j]ᵀ and ∂L/∂w[i,j] = Σ_{n,p,q} x̃[tap]ᵀ · dy; ∂L/∂b = Σ_{n,p,q} dy.

    dy (N, Ho, Wo, F) -> dx (N, H, W, C), dw (kh, kw, C, F), db (F,).
    """
    kernel, stride = w.shape[:2], _pair(stride)
    xp, (top, left) = _pad(x, kernel, stride, padding)
    dxp, dw = np.zeros_like(xp), np.empty_like(w)
    for i, j in np.ndindex(*kernel):
        tap = _tap(i, j, stride, dy.shape[1:3])
        dxp[tap] += dy @ w[i, j].T
        dw[i, j] = np.einsum("nhwc,nhwf->cf", xp[tap], dy)
    return dxp[:, top : top + x.shape[1], left : left + x.shape[2]], dw, dy.sum(axis=(0, 1, 2))


def relu(x: np.ndarray) -> np.ndarray:
    """y = max(x, 0)."""
    return np.maximum(x, 0)


def relu_backward(dy: np.ndarray, x: np.ndarray) -> np.ndarray:
    """∂L/∂x = dy · [x > 0]."""
    return dy * (x > 0)


def maxpool2d(x: np.ndarray, pool: Pair = 2, stride: Pair | None = None) -> np.ndarray:
    """y[n,p,q,c] = max_{i,j} x[n, s_h·p + i, s_w·q + j, c], no padding; stride defaults to pool as in Keras.

    x (N, H, W, C) -> y (N, Ho, Wo, C).
    """
    return _pool_taps(x, _pair(pool), _pair(stride or pool)).max(axis=0)


def maxpool2d_backward(dy: np.ndarray, x: np.ndarray, pool: Pair = 2, stride: Pair | None = None) -> np.ndarray:
    """The max passes its gradient to the input it took, the window's (first) argmax; others get 0."""
    pool, stride = _pair(pool), _pair(stride or pool)
    winner = _pool_taps(x, pool, stride).argmax(axis=0)  # (N, Ho, Wo, C): which tap won
    dx = np.zeros_like(x)
    for t, (i, j) in enumerate(np.ndindex(*pool)):
        dx[_tap(i, j, stride, dy.shape[1:3])] += np.where(winner == t, dy, 0)  # += : windows may overlap
    return dx


def _pool_taps(x: np.ndarray, pool: tuple[int, int], stride: tuple[int, int]) -> np.ndarray:
    """(kh·kw, N, Ho, Wo, C): each window's values, tap by tap."""
    out_hw = tuple(_out_size(n, k, s) for n, k, s in zip(x.shape[1:3], pool, stride))
    return np.stack([x[_tap(i, j, stride, out_hw)] for i, j in np.ndindex(*pool)])


def dense(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """y = x·w + b: x (N, D), w (D, K), b (K,) -> y (N, K)."""
    return x @ w + b


def dense_backward(dy: np.ndarray, x: np.ndarray, w: np.ndarray):
    """∂L/∂x = dy·wᵀ, ∂L/∂w = xᵀ·dy, ∂L/∂b = Σ_n dy."""
    return dy @ w.T, x.T @ dy, dy.sum(axis=0)


def softmax(z: np.ndarray) -> np.ndarray:
    """p[n,k] = exp(z[n,k]) / Σ_j exp(z[n,j]), shifted by max_j z[n,j] so exp cannot overflow."""
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def softmax_cross_entropy(z: np.ndarray, y: np.ndarray) -> float:
    """L = -(1/N) Σ_n log softmax(z)[n, y_n]: logits z (N, K), integer labels y (N,).

    Uses log softmax(z) = z - logsumexp(z), which stays finite where softmax underflows to 0.
    """
    m = z.max(axis=1, keepdims=True)
    log_p = z - m - np.log(np.exp(z - m).sum(axis=1, keepdims=True))
    return float(-log_p[np.arange(len(y)), y].mean())


def softmax_cross_entropy_backward(z: np.ndarray, y: np.ndarray) -> np.ndarray:
    """∂L/∂z = (softmax(z) - onehot(y)) / N."""
    dz = softmax(z)
    dz[np.arange(len(y)), y] -= 1
    return dz / len(y)


# --------------------------------------------------------------------------------------------
# A tiny CNN: conv(k×k, F, valid) -> ReLU -> maxpool 2×2 -> flatten -> dense(K) -> softmax-CE


def init_tiny_cnn(
    input_shape: tuple[int, int, int], num_classes: int, filters: int = 8, kernel: int = 3, seed: int = 0
) -> dict[str, np.ndarray]:
    """Float32 weights, Glorot-uniform kernels and zero biases (Keras' defaults)."""
    h, w, c = input_shape
    flat = (h - kernel + 1) // 2 * ((w - kernel + 1) // 2) * filters
    rng = np.random.default_rng(seed)
    taps = kernel * kernel
    return {
        "conv_w": _glorot(rng, (kernel, kernel, c, filters), fan_in=taps * c, fan_out=taps * filters),
        "conv_b": np.zeros(filters, np.float32),
        "dense_w": _glorot(rng, (flat, num_classes), fan_in=flat, fan_out=num_classes),
        "dense_b": np.zeros(num_classes, np.float32),
    }


def _glorot(rng: np.random.Generator, shape, fan_in: int, fan_out: int) -> np.ndarray:
    """U(-a, a) with a = √(6 / (fan_in + fan_out)): keeps activation variance roughly constant across layers."""
    limit = np.sqrt(6 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, shape).astype(np.float32)


def tiny_cnn_logits(params: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """x (N, H, W, C) -> logits (N, K)."""
    return _tiny_cnn_forward(params, x)[0]


def _tiny_cnn_forward(params, x):
    a = conv2d(x, params["conv_w"], params["conv_b"])  # (N, H-k+1, W-k+1, F)
    r = relu(a)
    m = maxpool2d(r)  # (N, (H-k+1)//2, (W-k+1)//2, F)
    z = dense(m.reshape(len(x), -1), params["dense_w"], params["dense_b"])  # (N, K)
    return z, (a, r, m)


def tiny_cnn_loss_and_grads(params: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray):
    """Mean softmax cross-entropy on (x, y) and its gradient for every weight (backpropagation:
    the layers' backward passes in reverse order)."""
    z, (a, r, m) = _tiny_cnn_forward(params, x)
    dz = softmax_cross_entropy_backward(z, y)
    dm, d_dense_w, d_dense_b = dense_backward(dz, m.reshape(len(x), -1), params["dense_w"])
    da = relu_backward(maxpool2d_backward(dm.reshape(m.shape), r), a)
    _, d_conv_w, d_conv_b = conv2d_backward(da, x, params["conv_w"])
    grads = {"conv_w": d_conv_w, "conv_b": d_conv_b, "dense_w": d_dense_w, "dense_b": d_dense_b}
    return softmax_cross_entropy(z, y), grads


@dataclass
class History:
    """Loss on the evaluation set after `examples` training examples, and the training time up to there."""

    examples: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)  # forward + backward + update only, evaluations excluded
    updates: int = 0


def sgd(
    params: dict[str, np.ndarray],
    x: np.ndarray,
    y: np.ndarray,
    *,
    batch_size: int,
    epochs: int,
    lr: float,
    seed: int = 0,
    eval_every: int | None = None,
    eval_set: tuple[np.ndarray, np.ndarray] | None = None,
):
    """Mini-batch SGD on the tiny CNN: each epoch visits the N examples once in a fresh random order,
    in batches B, and each batch takes the step θ ← θ - η ∇θ L_B(θ), L_B the mean loss over the batch.

    batch_size = N is full-batch gradient descent, 1 is pure SGD: for the same epochs all three
    process the same number of examples (the same compute), but in N/B·epochs steps.
    Returns the trained weights (the input ones are left alone) and a History evaluated every
    `eval_every` examples (default: every epoch) on `eval_set` (default: the training set).
    """
    params = {k: v.copy() for k, v in params.items()}
    x_eval, y_eval = eval_set if eval_set is not None else (x, y)
    eval_every = eval_every or len(x)
    rng = np.random.default_rng(seed)
    history, seen, seconds = History(), 0, 0.0

    def record():
        history.examples.append(seen)
        history.loss.append(softmax_cross_entropy(tiny_cnn_logits(params, x_eval), y_eval))
        history.seconds.append(seconds)

    record()
    for _ in range(epochs):
        order = rng.permutation(len(x))
        for start in range(0, len(x), batch_size):
            batch = order[start : start + batch_size]
            tic = time.perf_counter()
            _, grads = tiny_cnn_loss_and_grads(params, x[batch], y[batch])
            for k in params:
                params[k] -= lr * grads[k]
            seconds += time.perf_counter() - tic
            history.updates += 1
            crossed_a_checkpoint = (seen + len(batch)) // eval_every > seen // eval_every
            seen += len(batch)
            if crossed_a_checkpoint:
                record()
    if history.examples[-1] != seen:
        record()
    return params, history
