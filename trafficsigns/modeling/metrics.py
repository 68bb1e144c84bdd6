"""Classification metrics from predicted probabilities, in NumPy (no extra dependency)."""

from __future__ import annotations

import numpy as np


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """counts[t, p]: images of true class t predicted as p."""
    counts = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(counts, (y_true, y_pred), 1)
    return counts


def per_class_accuracy(confusion: np.ndarray) -> np.ndarray:
    """Recall of each class; NaN for a class absent from the evaluated set."""
    support = confusion.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, np.diag(confusion) / support, np.nan)


def macro_f1(confusion: np.ndarray) -> float:
    """Mean F1 over the classes present in the truth or the predictions."""
    tp = np.diag(confusion).astype(np.float64)
    predicted, actual = confusion.sum(axis=0), confusion.sum(axis=1)
    present = (predicted + actual) > 0
    f1 = 2 * tp[present] / (predicted[present] + actual[present])
    return float(f1.mean())


def top_k_accuracy(probs: np.ndarray, y_true: np.ndarray, k: int) -> float:
    top = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return float((top == y_true[:, None]).any(axis=1).mean())


def cross_entropy(probs: np.ndarray, y_true: np.ndarray) -> float:
    p = np.clip(probs[np.arange(len(y_true)), y_true], 1e-7, 1.0)
    return float(-np.log(p).mean())


def classification_metrics(probs: np.ndarray, y_true: np.ndarray) -> tuple[dict, np.ndarray]:
    """Headline metrics (for `dvc metrics`) and the confusion matrix they come from."""
    y_pred = probs.argmax(axis=1)
    confusion = confusion_matrix(y_true, y_pred, probs.shape[1])
    headline = {
        "accuracy": float((y_pred == y_true).mean()),
        "top5_accuracy": top_k_accuracy(probs, y_true, min(5, probs.shape[1])),
        "macro_f1": macro_f1(confusion),
        "loss": cross_entropy(probs, y_true),
        "images": int(len(y_true)),
    }
    return headline, confusion
