"""Figures people would rather look at than read: data overview and evaluation, as PNG files."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: stages run in CI and over ssh
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from trafficsigns.core.fsutil import atomic_path  # noqa: E402


def class_label(class_id: int, name: str) -> str:
    """ "07 Speed limit (100km/h)", a class in DVC's charts: they sort labels as text, so the zero-padded id
    keeps the classes in id order, and the name says which sign it is."""
    return f"{class_id:02d} {name}"


def class_id(label: str) -> int:
    """The id back from a class_label."""
    return int(label.split(" ", 1)[0])


def save(fig, path: Path) -> None:
    """PNG without matplotlib's `Software` text chunk (its version): the same figure, the same bytes."""
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=100, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)


def show_image(ax, image: np.ndarray) -> None:
    if image.shape[-1] == 1:
        ax.imshow(image[..., 0], cmap="gray", vmin=0, vmax=1)
    else:
        ax.imshow(np.clip(image, 0, 1))
    ax.set_xticks([]), ax.set_yticks([])


def class_histogram(labels: dict[str, np.ndarray], num_classes: int, path: Path) -> None:
    """Images per class for each split, side by side: GTSRB is very unbalanced."""
    fig, ax = plt.subplots(figsize=(12, 4))
    width = 0.8 / len(labels)
    for i, (split, y) in enumerate(labels.items()):
        counts = np.bincount(y, minlength=num_classes)
        ax.bar(np.arange(num_classes) + i * width, counts, width=width, label=f"{split} ({len(y)})")
    ax.set_xlabel("ClassId"), ax.set_ylabel("images"), ax.set_title("Images per class")
    ax.set_xticks(range(num_classes)), ax.tick_params(axis="x", labelsize=7), ax.legend()
    save(fig, path)


def size_histogram(sizes: np.ndarray, path: Path) -> None:
    """Distribution of the raw images' width and height (before resize)."""
    fig, ax = plt.subplots(figsize=(7, 4))
    bins = np.arange(0, sizes.max() + 10, 5)
    ax.hist(sizes[:, 0], bins=bins, alpha=0.6, label="width")
    ax.hist(sizes[:, 1], bins=bins, alpha=0.6, label="height")
    ax.set_xlabel("pixels"), ax.set_ylabel("images"), ax.legend()
    ax.set_title(f"Raw image sizes (median {np.median(sizes[:, 0]):.0f}×{np.median(sizes[:, 1]):.0f} px)")
    save(fig, path)


def sample_grid(x: np.ndarray, y: np.ndarray, class_names: list[str], path: Path, title: str) -> None:
    """One prepared image per class, as the network will see it."""
    cols = 9
    rows = -(-len(class_names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.4, rows * 1.6))
    for cid, ax in enumerate(axes.flat):
        ax.axis("off")
        idx = np.flatnonzero(y == cid)
        if cid < len(class_names) and len(idx):
            show_image(ax, x[idx[len(idx) // 2]])
            ax.axis("on"), ax.set_title(f"{cid}: {class_names[cid][:18]}", fontsize=6)
    fig.suptitle(title)
    save(fig, path)


def per_class_bars(accuracy: np.ndarray, class_names: list[str], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 10))
    order = np.arange(len(class_names))[::-1]
    colours = ["tab:red" if a < 0.9 else "tab:blue" for a in accuracy[order]]
    ax.barh([f"{i} {class_names[i][:30]}" for i in order], accuracy[order] * 100, color=colours)
    ax.set_xlabel("test accuracy (%)"), ax.set_xlim(0, 100), ax.tick_params(axis="y", labelsize=7)
    ax.set_title("Per-class test accuracy (red: < 90 %)")
    save(fig, path)


def confusion_heatmap(confusion: np.ndarray, path: Path) -> None:
    """Row-normalised, log-ish colour so rare confusions still show."""
    rates = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(9, 8))
    im = ax.imshow(np.sqrt(rates), cmap="viridis", vmin=0, vmax=1)
    ax.set_xlabel("predicted ClassId"), ax.set_ylabel("true ClassId"), ax.set_title("Confusion matrix (√ of row rate)")
    n = len(confusion)
    ax.set_xticks(range(n)), ax.set_yticks(range(n)), ax.tick_params(labelsize=6)
    fig.colorbar(im, ax=ax, fraction=0.046)
    save(fig, path)


def error_gallery(
    x: np.ndarray, y_true: np.ndarray, probs: np.ndarray, class_names: list[str], path: Path, count: int
) -> None:
    """The most confident mistakes: image, true class, predicted class and its probability."""
    y_pred = probs.argmax(axis=1)
    wrong = np.flatnonzero(y_pred != y_true)
    wrong = wrong[np.argsort(-probs[wrong, y_pred[wrong]], kind="stable")][:count]
    cols = 6
    rows = max(1, -(-len(wrong) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 2.2, rows * 2.6), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, wrong):
        show_image(ax, x[i])
        ax.axis("on")
        ax.set_title(
            f"true: {class_names[y_true[i]][:22]}\npred: {class_names[y_pred[i]][:22]}\np={probs[i, y_pred[i]]:.2f}",
            fontsize=6,
        )
    fig.suptitle(f"{len(wrong)} most confident errors of {int((y_pred != y_true).sum())}")
    save(fig, path)


def augment_families(
    before: np.ndarray,
    label: str,
    families: list[tuple[str, np.ndarray, str]],
    made: list[tuple[str, np.ndarray]],
    path: Path,
    title: str,
) -> None:
    """Each augmentation family alone on one training image (before / after), then copies the stage made."""
    cols = max(len(families), len(made))
    rows = 3 if made else 2
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.45, rows * 1.75), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for col, (name, after, amount) in enumerate(families):
        for row, (image, text) in enumerate(((before, name), (after, amount))):
            ax = axes[row, col]
            show_image(ax, image)
            ax.axis("on"), ax.set_title(text, fontsize=8 if row == 0 else 7)
    for col, (text, image) in enumerate(made):
        show_image(axes[2, col], image)
        axes[2, col].axis("on"), axes[2, col].set_title(text, fontsize=7)
    for row, text in enumerate(("before", "after", "made")[:rows]):
        axes[row, 0].axis("on"), axes[row, 0].set_ylabel(text, fontsize=8)
    fig.subplots_adjust(top=1 - 0.3 / fig.get_figheight())  # room for the column titles only
    fig.suptitle(f"{title}\n(image: {label})", fontsize=9, y=1.0, va="bottom")  # above them
    save(fig, path)
