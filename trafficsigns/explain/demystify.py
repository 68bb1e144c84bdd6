"""`python -m trafficsigns demystify`: what a convolution, a ReLU and a max-pooling compute, and why
we train by SGD on mini-batches, as PNG figures. Every convolution is `numpy_nn.conv2d`.

    1_classic_kernels.png          a sign convolved with hand-made kernels: edges, blur, sharpen
    2_first_layer_kernels.png      the trained model's first-layer kernels ...
    2_first_layer_feature_maps.png ... and what they make of the same sign
    3_relu_maxpool.png             one feature map through ReLU and max-pooling, with the numbers
    4_gd_vs_sgd.png                full-batch GD vs mini-batch SGD vs pure SGD at equal compute

The inputs are optional: without the dataset the image is a synthetic digit, without the model
figure 2 is skipped and figure 3 uses the Sobel x kernel. An input named explicitly must exist.

A little over our ~400-line guide: it is one figure function per row above, each a teaching text
(panels, captions, the numbers shown) meant to be read top to bottom beside its figure; the maths they
draw lives in `numpy_nn`.
"""

from __future__ import annotations

import argparse
import logging
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trafficsigns.core.errors import PipelineError
from trafficsigns.core.paths import BEST_MODEL, DATASET, DEMYSTIFY_PLOTS
from trafficsigns.core.shell import at_least
from trafficsigns.explain import numpy_nn as nn
from trafficsigns.explain.digits import render_digits
from trafficsigns.reporting import plots

plt = plots.plt
log = logging.getLogger(__name__)

# The figures' file names (the report captions them).
CLASSIC_KERNELS_PNG = "1_classic_kernels.png"
KERNELS_PNG = "2_first_layer_kernels.png"
FEATURE_MAPS_PNG = "2_first_layer_feature_maps.png"
RELU_MAXPOOL_PNG = "3_relu_maxpool.png"
GD_VS_SGD_PNG = "4_gd_vs_sgd.png"
SOBEL_X = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], np.float32)
CLASSIC_KERNELS = {  # kernels that sum to 0 detect change, those that sum to 1 keep the brightness
    "Sobel x\n(vertical edges)": SOBEL_X,
    "Sobel y\n(horizontal edges)": SOBEL_X.T,
    "Laplacian\n(edges, any direction)": np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]], np.float32),
    "Gaussian blur 5×5": np.outer(*[np.array([1, 4, 6, 4, 1], np.float32) / 16] * 2),
    "Sharpen\n(image + -Laplacian)": np.array([[0, -1, 0], [-1, 5, -1], [0, -1, 0]], np.float32),
}
LUMA = np.array([0.299, 0.587, 0.114], np.float32)  # ITU-R BT.601 RGB -> gray
SIGNED = "RdBu_r"  # blue < 0 < red, white at 0
# name: (batch size, None for the whole training set; learning rate). Each rate is about the best of
# 0.01-2 for its batch size on the default problem: a bigger batch averages away more gradient noise,
# so it can take bigger steps; above these rates the runs blow up.
SGD_RUNS = {"full-batch GD": (None, 1.0), "mini-batch SGD": (32, 0.4), "pure SGD": (1, 0.05)}
EVAL_DIGITS = 500  # the training-loss curves are measured on this many training digits


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=DEMYSTIFY_PLOTS, help="figures folder (default: %(default)s)")
    parser.add_argument("--model", type=Path, help=f"trained .keras model (default: {BEST_MODEL} if present)")
    parser.add_argument("--dataset", type=Path, help=f"prepared dataset (default: {DATASET} if present)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--digits", type=at_least(10), default=2000, help="training digits for figure 4 (default: %(default)s)"
    )
    parser.add_argument("--epochs", type=at_least(1), default=3, help="epochs for figure 4 (default: %(default)s)")


def run(args: argparse.Namespace) -> int:
    model = _optional_input(args.model, BEST_MODEL, "model", "skipping figure 2 (the model's first layer)")
    dataset = _optional_input(args.dataset, DATASET, "dataset", "using a synthetic digit as the image")
    demystify(args.out, model, dataset, seed=args.seed, digits=args.digits, epochs=args.epochs)
    return 0


def _optional_input(given: Path | None, default: Path, what: str, fallback: str) -> Path | None:
    """The path given, which must exist; else the default path if it exists; else None, said in the log."""
    if given is not None:
        if not given.exists():
            raise PipelineError(f"{given}: {what} not found (leave --{what} out to do without)")
        return given
    if default.exists():
        return default
    log.info("no %s at %s: %s", what, default, fallback)
    return None


def demystify(
    out: Path,
    model: Path | None,
    dataset: Path | None,
    *,
    seed: int = 0,
    digits: int = 2000,
    epochs: int = 3,
    wall_time: bool = True,
) -> list[Path]:
    """Write the figures under `out`; return their paths.

    `wall_time=False` (the pipeline stage) draws figure 4's second panel against parameter updates
    instead of seconds, so that the figures are the same bytes on every run; the seconds are logged.
    """
    image, caption = sample_image(dataset, seed)
    written = [classic_kernels_figure(_with_channels(image, 1), caption, out / CLASSIC_KERNELS_PNG)]
    if model is None:
        layer = FirstConv(SOBEL_X[:, :, None, None], np.zeros(1, np.float32), "Sobel x kernel")
        image_for_layer = _with_channels(image, 1)
    else:
        layer = FirstConv.from_model(model)
        image_for_layer = _with_channels(image, layer.w.shape[2])
        written += first_layer_figures(layer, image_for_layer, caption, out)
    written.append(relu_maxpool_figure(layer, image_for_layer, caption, out / RELU_MAXPOOL_PNG))
    written.append(gd_vs_sgd_figure(out / GD_VS_SGD_PNG, seed=seed, digits=digits, epochs=epochs, wall_time=wall_time))
    for path in written:
        log.info("wrote %s", path)
    return written


# --------------------------------------------------------------------------------------------
# Inputs


def sample_image(dataset: Path | None, seed: int) -> tuple[np.ndarray, str]:
    """(H, W, C) float32 in [0, 1] and a caption: the most contrasted (largest pixel std) of 64 random
    test signs, whose edges show clearly; or a synthetic digit without a dataset."""
    if dataset is None:
        x, y = render_digits(1, seed)
        return x[0, :, :, None].astype(np.float32) / 255, f"synthetic digit {y[0]}"
    from trafficsigns.data.h5store import read_dataset

    ds = read_dataset(dataset, splits=("test",))
    x, y = ds.x["test"], ds.y["test"]
    if not len(x):
        raise PipelineError(f"{dataset}: the test split is empty")
    candidates = np.random.default_rng(seed).choice(len(x), size=min(64, len(x)), replace=False)
    best = candidates[x[candidates].std(axis=(1, 2, 3)).argmax()]
    return x[best], f"test sign #{best}: {ds.class_names[y[best]]}"


def _with_channels(image: np.ndarray, channels: int) -> np.ndarray:
    """Gray <-> RGB on the last axis, so any image fits any model."""
    if image.shape[-1] == channels:
        return image
    if channels == 1:
        return (image @ LUMA)[..., None]
    return np.repeat(image, channels, axis=-1)


def _filter(images: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """(N, H, W) or (H, W) gray images cross-correlated with one 2-D kernel, valid padding."""
    batch = images.reshape(-1, *images.shape[-2:], 1)  # (N, H, W, 1)
    out = nn.conv2d(batch, kernel[:, :, None, None], np.zeros(1, np.float32))[..., 0]
    return out.reshape(images.shape[:-2] + out.shape[1:])


@dataclass
class FirstConv:
    """A Conv2D + ReLU layer as NumPy weights: w (kh, kw, C, F) HWIO, b (F,)."""

    w: np.ndarray
    b: np.ndarray
    name: str
    stride: tuple[int, int] = (1, 1)
    padding: str = "valid"

    @classmethod
    def from_model(cls, path: Path) -> FirstConv:
        """The model's first Conv2D, checked against Keras on a random input."""
        import keras  # imported here: TensorFlow takes seconds to load and only this figure needs it

        from trafficsigns.modeling.models import load_model

        model = load_model(path)
        convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
        if not convs:
            raise PipelineError(f"{path}: the model has no Conv2D layer")
        conv = convs[0]
        if conv.get_config()["activation"] != "relu" or tuple(conv.dilation_rate) != (1, 1) or conv.groups != 1:
            raise PipelineError(f"{path}: first Conv2D {conv.name!r} is not a plain ReLU convolution")
        w, b = (np.asarray(v) for v in conv.get_weights())
        layer = cls(w, b, f"{model.name}/{conv.name}", tuple(conv.strides), conv.padding)
        x = np.random.default_rng(0).random((1, 16, 16, w.shape[2]), dtype=np.float32)
        error = np.abs(layer(x) - keras.ops.convert_to_numpy(conv(x))).max()
        log.info(
            "NumPy conv2d + relu reproduce %s (%d kernels %dx%d) to max |Δ| = %.1e",
            layer.name,
            w.shape[3],
            w.shape[0],
            w.shape[1],
            error,
        )
        return layer

    def pre_activation(self, image: np.ndarray) -> np.ndarray:
        """(H, W, C) -> (Ho, Wo, F): Σ w·x + b."""
        return nn.conv2d(image[None], self.w, self.b, self.stride, self.padding)[0]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return nn.relu(nn.conv2d(x, self.w, self.b, self.stride, self.padding))


# --------------------------------------------------------------------------------------------
# Figures 1-3: convolution, ReLU, max-pooling


def _show(ax, image: np.ndarray, title: str = "", signed: bool = False, vmax: float | None = None):
    """Gray (H, W[, 1]) in [0, 1], RGB as is, or signed values on a white-at-zero scale."""
    image = image[..., 0] if image.ndim == 3 and image.shape[-1] == 1 else image
    if signed:
        vmax = vmax or max(float(np.abs(image).max()), 1e-6)
        ax.imshow(image, cmap=SIGNED, vmin=-vmax, vmax=vmax)
    elif image.ndim == 3:
        ax.imshow(np.clip(image, 0, 1))
    else:
        ax.imshow(image, cmap="gray", vmin=0, vmax=vmax or 1)
    ax.set_title(title, fontsize=8)
    ax.set_xticks([]), ax.set_yticks([])


def _wrap(text: str, width: int = 32) -> str:
    return "\n".join(textwrap.wrap(text, width))


def _annotate(ax, values: np.ndarray, fmt: str = "{:.2f}", bold=None):
    """Write each cell's value on the matrix just shown on `ax`, white on dark cells; `bold`
    (bool mask) marks chosen cells."""
    shown = ax.images[-1]
    for (r, c), v in np.ndenumerate(values):
        red, green, blue, _ = shown.cmap(shown.norm(v))
        dark = 0.299 * red + 0.587 * green + 0.114 * blue < 0.5
        ax.text(
            c,
            r,
            fmt.format(v),
            ha="center",
            va="center",
            fontsize=7,
            color="white" if dark else "black",
            fontweight="bold" if bold is not None and bold[r, c] else "normal",
        )


def classic_kernels_figure(gray: np.ndarray, caption: str, path: Path) -> Path:
    """Top: each kernel and its weights. Bottom: the image cross-correlated with it (valid padding)."""
    fig, axes = plt.subplots(2, len(CLASSIC_KERNELS) + 1, figsize=(2.2 * (len(CLASSIC_KERNELS) + 1), 5))
    _show(axes[0, 0], gray, f"input {gray.shape[0]}×{gray.shape[1]}\n{_wrap(caption)}")
    axes[1, 0].axis("off")
    legend = (
        "y[p,q] = Σᵢⱼ x[p+i, q+j] · k[i,j]\n\nΣ k = 0 (edges):\nred > 0, white = 0, blue < 0\n\n"
        "Σ k = 1 (blur, sharpen):\ngray, clipped to [0, 1]"
    )
    axes[1, 0].text(0.5, 0.5, legend, ha="center", va="center", fontsize=8)
    for col, (name, kernel) in enumerate(CLASSIC_KERNELS.items(), start=1):
        signed = bool(np.isclose(kernel.sum(), 0))
        _show(axes[0, col], kernel, name, signed=True)
        _annotate(axes[0, col], kernel, "{:g}" if len(kernel) == 3 else "{:.3f}")
        out = _filter(gray[..., 0], kernel)
        _show(axes[1, col], out if signed else np.clip(out, 0, 1), f"{out.shape[0]}×{out.shape[1]}", signed=signed)
    fig.suptitle("Convolution with classic kernels (NumPy conv2d, valid padding)")
    plots.save(fig, path)
    return path


def first_layer_figures(layer: FirstConv, image: np.ndarray, caption: str, out: Path) -> list[Path]:
    """The kernels on one shared signed scale, then their ReLU feature maps on one shared scale, so
    both figures also show which filters are strong and which stay silent on this image."""
    kh, kw, c, f = layer.w.shape
    cols = int(np.ceil(np.sqrt(f * 1.5)))
    rows = -(-f // cols)
    kernels = layer.w if c == 3 else layer.w[:, :, 0]  # (kh, kw, [3,] F)
    vmax = float(np.abs(layer.w).max())

    fig, axes = plt.subplots(rows, cols, figsize=(cols * 0.9, rows * 1.0), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < f:
            kernel = kernels[..., i]
            _show(ax, kernel / (2 * vmax) + 0.5 if c == 3 else kernel, str(i), signed=c != 3, vmax=vmax)
    fig.suptitle(f"{layer.name}: {f} kernels {kh}×{kw}×{c} (red > 0 > blue, shared scale ±{vmax:.2f})")
    paths = [out / KERNELS_PNG]
    plots.save(fig, paths[0])

    maps = layer(image[None])[0]  # (Ho, Wo, F)
    fig, axes = plt.subplots(rows, cols + 1, figsize=((cols + 1) * 0.9, rows * 1.0), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    _show(axes[0, 0], image, "input")
    for i, ax in enumerate(axes[:, 1:].flat[:f]):
        _show(ax, maps[..., i], str(i), vmax=float(maps.max()))
    fig.suptitle(
        f"{caption}\nthrough {layer.name}: ReLU(conv + b), {maps.shape[0]}×{maps.shape[1]}, "
        f"shared scale 0 (black) to {maps.max():.2f} (white); "
        f"{int((maps.max(axis=(0, 1)) == 0).sum())} of {f} maps are all zero on this image",
        fontsize=9,
    )
    paths.append(out / FEATURE_MAPS_PNG)
    plots.save(fig, paths[1])
    return paths


def relu_maxpool_figure(layer: FirstConv, image: np.ndarray, caption: str, path: Path) -> Path:
    """Top: image -> conv + b -> ReLU -> 2×2 max-pool, for the filter whose response is strong and
    about as often negative as positive, so ReLU visibly acts. Bottom: the numbers in a 4×4 patch
    (black box) through the same steps."""
    pre = layer.pre_activation(image)
    balance = np.minimum((pre > 0).mean(axis=(0, 1)), (pre < 0).mean(axis=(0, 1)))
    f = int((pre.std(axis=(0, 1)) * balance).argmax())
    a = pre[..., f]
    r = nn.relu(a)
    pooled = nn.maxpool2d(r[None, ..., None])[0, ..., 0]
    top, left = _mixed_patch(a)
    patch, patch_r = a[top : top + 4, left : left + 4], r[top : top + 4, left : left + 4]
    patch_p = nn.maxpool2d(patch_r[None, ..., None])[0, ..., 0]
    vmax = float(np.abs(a).max())

    fig, axes = plt.subplots(2, 4, figsize=(12, 6.4))
    _show(axes[0, 0], image, f"input {image.shape[0]}×{image.shape[1]}\n{_wrap(caption)}")
    _show(axes[0, 1], a, f"1. conv: y = Σ w·x + b (filter {f})\n{a.shape[0]}×{a.shape[1]}", signed=True, vmax=vmax)
    _show(
        axes[0, 2], r, f"2. ReLU: max(y, 0)\n{(a < 0).mean():.0%} of the values were < 0 -> 0", signed=True, vmax=vmax
    )
    pool_title = f"3. max-pool 2×2, stride 2\n{pooled.shape[0]}×{pooled.shape[1]}: a quarter of the values"
    _show(axes[0, 3], pooled, pool_title, signed=True, vmax=vmax)
    for ax, (row, col, size) in zip(axes[0, 1:], [(top, left, 4)] * 2 + [(top // 2, left // 2, 2)]):
        ax.add_patch(plt.Rectangle((col - 0.5, row - 0.5), size, size, fill=False, lw=1.5, color="black"))

    kernel = layer.w[:, :, :, f].sum(axis=2)
    _show(
        axes[1, 0],
        kernel,
        f"filter {f} weights" + (" (Σ over channels)" if layer.w.shape[2] > 1 else "") + f"\nbias b = {layer.b[f]:.3f}",
        signed=True,
    )
    _annotate(axes[1, 0], kernel)
    _show(axes[1, 1], patch, "conv output in the box", signed=True, vmax=vmax)
    _annotate(axes[1, 1], patch)
    _show(
        axes[1, 2], patch_r, "after ReLU (negatives -> 0)\nbold: each 2×2 window's (first) max", signed=True, vmax=vmax
    )
    # the cells max-pooling's backward pass sends the gradient to: one per window, even among ties
    winners = nn.maxpool2d_backward(np.ones((1, 2, 2, 1)), patch_r[None, ..., None])[0, ..., 0] > 0
    _annotate(axes[1, 2], patch_r, bold=winners)
    axes[1, 2].axhline(1.5, color="black", lw=1.5), axes[1, 2].axvline(1.5, color="black", lw=1.5)
    _show(axes[1, 3], patch_p, "after max-pool: each window's max", signed=True, vmax=vmax)
    _annotate(axes[1, 3], patch_p, bold=np.ones_like(patch_p, bool))
    fig.suptitle(f"{layer.name}, filter {f}: convolution, ReLU, max-pooling step by step (NumPy)")
    plots.save(fig, path)
    return path


def _mixed_patch(a: np.ndarray) -> tuple[int, int]:
    """Top-left of the 2-aligned 4×4 patch with the most varied values, preferring at least 4 of each sign."""

    def score(corner):
        patch = a[corner[0] : corner[0] + 4, corner[1] : corner[1] + 4]
        return bool((patch > 0).sum() >= 4 and (patch < 0).sum() >= 4), float(patch.std())

    corners = ((row, col) for row in range(0, a.shape[0] - 3, 2) for col in range(0, a.shape[1] - 3, 2))
    return max(corners, key=score)


# --------------------------------------------------------------------------------------------
# Figure 4: gradient descent vs SGD at equal compute


def gd_vs_sgd_figure(path: Path, *, seed: int, digits: int, epochs: int, wall_time: bool = True) -> Path:
    """Train the same tiny NumPy CNN from the same start with batch = all / 32 / 1 for the same epochs:
    the same examples processed (the same compute), in epochs, epochs·⌈N/32⌉ and epochs·N updates.
    The second panel is against wall time, or with `wall_time=False` against updates (reproducible)."""
    x, y = render_digits(digits, seed)
    x_test, y_test = render_digits(max(digits // 4, 10), seed, stream=1)
    x, x_test = (v[..., None].astype(np.float32) / 255 for v in (x, x_test))
    start = nn.init_tiny_cnn(x.shape[1:], 10, filters=8, seed=seed)
    eval_set = (x[:EVAL_DIGITS], y[:EVAL_DIGITS])

    fig, (ax_examples, ax_time) = plt.subplots(1, 2, figsize=(13, 4.8))
    for name, (batch, lr) in SGD_RUNS.items():
        batch = batch or len(x)
        trained, history = nn.sgd(
            start,
            x,
            y,
            batch_size=batch,
            epochs=epochs,
            lr=lr,
            seed=seed,
            eval_every=max(1, len(x) // 20),
            eval_set=eval_set,
        )
        accuracy = np.mean(nn.tiny_cnn_logits(trained, x_test).argmax(axis=1) == y_test)
        log.info(
            "%s (batch %d): %d updates in %.2f s, training loss %.3f -> %.3f, test accuracy %.1f %%",
            name,
            batch,
            history.updates,
            history.seconds[-1],
            history.loss[0],
            history.loss[-1],
            100 * accuracy,
        )
        seconds = f"{history.seconds[-1]:.1f} s, " if wall_time else ""
        label = f"{name}, batch {batch}, η = {lr:g}: {history.updates} updates, {seconds}test acc. {accuracy:.0%}"
        marker = "." if history.updates < 20 else None  # so GD's few steps show
        ax_examples.plot(history.examples, history.loss, marker=marker, label=label)
        if wall_time:
            ax_time.plot(history.seconds, history.loss, marker=marker, label=label)
        else:  # updates so far: whole epochs of ⌈N/B⌉ batches, then the batches of the current one
            steps = [e // len(x) * -(-len(x) // batch) + -(-(e % len(x)) // batch) for e in history.examples]
            ax_time.plot(steps, history.loss, marker=marker, label=label)
    ax_examples.set_xlabel("training examples processed (compute)")
    if wall_time:
        ax_time.set_xlabel("training wall time (s, evaluation excluded)")
    else:
        ax_time.set_xscale("symlog", linthresh=1)
        ax_time.set_xlabel("parameter updates (each costs a step's overhead: fewer, larger batches run faster)")
    for ax in (ax_examples, ax_time):
        ax.set_ylabel(f"training loss ({len(eval_set[0])} training digits)"), ax.grid(alpha=0.3)
    fig.legend(*ax_examples.get_legend_handles_labels(), loc="upper center", bbox_to_anchor=(0.5, 0.02), fontsize=9)
    fig.suptitle(
        f"Tiny NumPy CNN (conv 3×3×8, ReLU, max-pool, dense) on {len(x)} synthetic digits: "
        f"{epochs} epochs each (same compute), same start",
        fontsize=10,
    )
    plots.save(fig, path)
    return path
