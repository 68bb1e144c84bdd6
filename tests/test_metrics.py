import numpy as np
import pytest

from trafficsigns.modeling.metrics import classification_metrics, confusion_matrix, macro_f1, per_class_accuracy


def test_metrics_match_hand_computation():
    # 3 classes, 5 images; predictions: 0->0, 0->1, 1->1, 2->2, 2->1
    probs = np.array([[0.7, 0.2, 0.1], [0.3, 0.6, 0.1], [0.1, 0.8, 0.1], [0.1, 0.2, 0.7], [0.2, 0.5, 0.3]])
    y = np.array([0, 0, 1, 2, 2])
    headline, confusion = classification_metrics(probs, y)
    assert confusion.tolist() == [[1, 1, 0], [0, 1, 0], [0, 1, 1]]
    assert headline["accuracy"] == pytest.approx(3 / 5)
    # F1: class0 2*1/(1+2)=2/3, class1 2*1/(3+1)=1/2, class2 2*1/(1+2)=2/3
    assert headline["macro_f1"] == pytest.approx((2 / 3 + 1 / 2 + 2 / 3) / 3)
    assert headline["top5_accuracy"] == 1.0  # only 3 classes: top-k is capped at the class count
    expected_loss = -np.mean(np.log([0.7, 0.3, 0.8, 0.7, 0.3]))
    assert headline["loss"] == pytest.approx(expected_loss)
    assert per_class_accuracy(confusion).tolist() == pytest.approx([0.5, 1.0, 0.5])


def test_absent_class_is_nan_and_ignored_by_f1():
    confusion = confusion_matrix(np.array([0, 1]), np.array([0, 1]), 3)
    acc = per_class_accuracy(confusion)
    assert np.isnan(acc[2]) and acc[:2].tolist() == [1.0, 1.0]
    assert macro_f1(confusion) == 1.0
