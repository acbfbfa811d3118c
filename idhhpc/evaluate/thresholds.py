"""Operating-point choice on the validation set, so the test set never influences the threshold."""

from __future__ import annotations

import warnings
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike
from sklearn.metrics import precision_recall_curve, roc_curve

from idhhpc.evaluate.inputs import as_binary_arrays, has_both_classes

FALLBACK_THRESHOLD = 0.5


def choose_threshold(y_true: ArrayLike, prob: ArrayLike, method: Literal["f1", "youden"] = "f1") -> float:
    """Return the probability cut-off (predict mutant when ``prob >= threshold``) that maximises
    the mutant-class F1 (``"f1"``) or Youden's J = sensitivity + specificity - 1 (``"youden"``).

    Ties go to the highest threshold, the most conservative call of "mutant". With only one
    class present neither criterion is defined, so it warns and returns 0.5.
    """
    labels, probs = as_binary_arrays(y_true, prob)
    if method not in ("f1", "youden"):
        raise ValueError(f"unknown threshold method {method!r}: use 'f1' or 'youden'")
    if not has_both_classes(labels):
        warnings.warn(
            f"choose_threshold: validation labels hold one class only; using {FALLBACK_THRESHOLD}",
            RuntimeWarning,
            stacklevel=2,
        )
        return FALLBACK_THRESHOLD
    if method == "f1":
        return _best_f1_threshold(labels, probs)
    return _best_youden_threshold(labels, probs)


def _best_f1_threshold(labels: np.ndarray, probs: np.ndarray) -> float:
    precision, recall, thresholds = precision_recall_curve(labels, probs)
    precision, recall = precision[:-1], recall[:-1]
    denominator = precision + recall
    f1 = np.divide(2 * precision * recall, denominator, out=np.zeros_like(denominator), where=denominator > 0)
    best = np.flatnonzero(f1 == f1.max())[-1]
    return float(thresholds[best])


def _best_youden_threshold(labels: np.ndarray, probs: np.ndarray) -> float:
    fpr, tpr, thresholds = roc_curve(labels, probs, drop_intermediate=False)
    finite = np.isfinite(thresholds)
    youden = np.where(finite, tpr - fpr, -np.inf)
    best = np.flatnonzero(youden == youden.max())[0]
    return float(thresholds[best])
