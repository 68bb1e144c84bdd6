"""What the network sees: every convolution layer's feature maps for a few test images, and the first
layer's kernels. Any model works; one without a Conv2D layer (the dense `dnn`) has nothing to show,
and `conv_layers` says so by returning an empty list.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import NamedTuple

import keras
import numpy as np

from trafficsigns.data.h5store import read_dataset
from trafficsigns.explain.demystify import FirstConv, first_layer_figures
from trafficsigns.modeling.models import load_model
from trafficsigns.reporting import plots

plt = plots.plt
MAPS_SHOWN = 12  # per layer: the most active maps for the image


def conv_layers(model: keras.Model) -> list[keras.layers.Conv2D]:
    return [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]


def feature_maps(model: keras.Model, x: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """(layer name, (N, H, W, F) outputs) for each Conv2D layer, from one sub-model sharing the weights."""
    convs = conv_layers(model)
    if not convs:
        return []
    probe = keras.Model(model.inputs, [layer.output for layer in convs])
    outputs = probe.predict(x, verbose=0)
    outputs = outputs if isinstance(outputs, list) else [outputs]
    # float32: under train.mixed_precision the layers compute in float16 / bfloat16
    return [(layer.name, np.asarray(out, dtype=np.float32)) for layer, out in zip(convs, outputs)]


def pick_images(y: np.ndarray, count: int, seed: int = 0) -> np.ndarray:
    """Indices of `count` test images of different classes (as far as there are classes), seeded."""
    chosen, seen = [], set()
    for i in np.random.default_rng(seed).permutation(len(y)):
        if y[i] not in seen:
            chosen.append(int(i)), seen.add(y[i])
        if len(chosen) == count:
            break
    return np.array(chosen, dtype=np.int64)


def feature_maps_figure(image: np.ndarray, caption: str, maps: list[tuple[str, np.ndarray]], path: Path) -> Path:
    """Top row: the image. Then one row per conv layer, input side first: its most active maps
    (highest mean) on one scale per row, so a row also shows which maps stay dark."""
    cols = MAPS_SHOWN + 1
    fig, axes = plt.subplots(len(maps) + 1, cols, figsize=(cols * 0.95, (len(maps) + 1) * 1.1), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    plots.show_image(axes[0, 0], image)
    axes[0, 0].axis("on")
    axes[0, 1].text(0, 0.5, caption, va="center", fontsize=9)
    for row, (name, m) in enumerate(maps, start=1):
        strongest = np.argsort(-m.mean(axis=(0, 1)), kind="stable")[:MAPS_SHOWN]
        low, high = min(float(m.min()), 0.0), max(float(m.max()), 1e-6)
        axes[row, 0].text(
            0.5,
            0.5,
            f"{name}\n{m.shape[0]}×{m.shape[1]}×{m.shape[2]}\nwhite = {high:.2f}",
            ha="center",
            va="center",
            fontsize=7,
        )
        for ax, f in zip(axes[row, 1:], strongest):
            ax.imshow(m[..., f], cmap="gray", vmin=low, vmax=high)
            ax.set_title(str(f), fontsize=6)
    fig.suptitle(
        f"Feature maps of each convolution layer: the {MAPS_SHOWN} most active per layer (map number above each)",
        fontsize=9,
    )
    plots.save(fig, path)
    return path


def kernels_figure(model: keras.Model, image: np.ndarray, caption: str, path: Path) -> Path:
    """The first Conv2D's kernels, drawn by demystify's figure (one signed scale for all kernels)."""
    conv = conv_layers(model)[0]
    w, *bias = (np.asarray(v) for v in conv.get_weights())
    b = bias[0] if bias else np.zeros(w.shape[-1], np.float32)
    layer = FirstConv(w, b, f"{model.name}/{conv.name}", tuple(conv.strides), conv.padding)
    with tempfile.TemporaryDirectory() as tmp:
        kernels, _ = first_layer_figures(layer, image, caption, Path(tmp))
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(kernels, path)
    return path


class Conv(NamedTuple):
    name: str
    filters: int
    kernel: tuple[int, int]


class NetworkViews(NamedTuple):
    """What `network_views` drew, for the report to lay out."""

    model: str  # the model's name
    convs: list[Conv]  # its Conv2D layers, input side first (none: nothing else was drawn)
    kernels: Path | None  # the first layer's kernels, on the first image shown
    feature_maps: list[tuple[int, Path]]  # (test image index, its feature maps figure)


def network_views(model_path: Path, dataset_path: Path, expected: dict, count: int, work: Path) -> NetworkViews:
    """The model at `model_path` run on `count` test images of different classes: the first layer's
    kernels and every conv layer's feature maps, drawn in `work`. The test set is read only if the
    model has a convolution layer; `expected` is the meta it must have been prepared with."""
    model = load_model(model_path)
    convs = [Conv(c.name, c.filters, tuple(c.kernel_size)) for c in conv_layers(model)]
    if not convs:
        return NetworkViews(model.name, [], None, [])
    ds = read_dataset(dataset_path, splits=("test",), expected=expected)
    x, y = ds.x["test"], ds.y["test"]
    chosen = pick_images(y, count)
    kernels, drawn = None, []
    if len(x):
        first = int(chosen[0]) if len(chosen) else 0
        caption = f"test image #{first}: {ds.class_names[y[first]]}"
        kernels = kernels_figure(model, x[first], caption, work / "first_layer_kernels.png")
    if len(chosen):
        probs = model.predict(x[chosen], verbose=0)
        maps = feature_maps(model, x[chosen])
        for n, i in enumerate(chosen):
            pred = int(probs[n].argmax())
            caption = (
                f"test image #{i}, true: {ds.class_names[y[i]]}\n"
                f"predicted: {ds.class_names[pred]} (p = {probs[n, pred]:.2f})"
            )
            path = feature_maps_figure(
                x[i], caption, [(name, m[n]) for name, m in maps], work / f"feature_maps_{n + 1}.png"
            )
            drawn.append((int(i), path))
    return NetworkViews(model.name, convs, kernels, drawn)
