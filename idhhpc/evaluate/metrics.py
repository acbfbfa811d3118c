"""Point estimates of every test metric at one threshold, with scikit-learn's definitions.

Keys are bare (``auc``, ``f1_weighted``, ...); callers add the ``test/`` prefix for MLflow.
Metrics that need both classes in ``y_true`` (ROC-AUC, AP, MCC, balanced accuracy) or a
non-empty denominator (a precision with no predictions of that class) are NaN instead of raising.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    balanced_accuracy_score,
    brier_score_loss,
    confusion_matrix,
    matthews_corrcoef,
    precision_recall_fscore_support,
    roc_auc_score,
)

from idhhpc.constants import CLASS_NAMES
from idhhpc.evaluate.inputs import as_binary_arrays, has_both_classes
from idhhpc.predictor import predicted_labels as predict_labels  # no class for a non-finite probability

COUNT_KEYS = ("tn", "fp", "fn", "tp")
METRIC_KEYS = (
    "accuracy", "balanced_accuracy", "auc", "pr_auc", "mcc", "brier", "sensitivity", "specificity",
    "precision_wildtype", "recall_wildtype", "f1_wildtype", "precision_mutant", "recall_mutant", "f1_mutant",
    "precision_macro", "recall_macro", "f1_macro", "precision_weighted", "recall_weighted", "f1_weighted",
    *COUNT_KEYS,
)  # fmt: skip
"""Every key of ``compute_metrics``, in the order reports list them."""
AVERAGES = ("macro", "weighted")


def compute_metrics(y_true: ArrayLike, prob: ArrayLike, threshold: float) -> dict[str, float]:
    """Return accuracy, per-class / macro / weighted precision-recall-F1, ROC-AUC, AP, MCC,
    Brier score, sensitivity, specificity and the confusion counts, all as plain floats."""
    labels, probs = as_binary_arrays(y_true, prob)
    predicted = predict_labels(probs, threshold)
    metrics = _confusion_counts(labels, predicted)
    metrics.update(_precision_recall_f1(labels, predicted))
    metrics["accuracy"] = float(accuracy_score(labels, predicted))
    metrics["brier"] = float(brier_score_loss(labels, probs, pos_label=1))
    metrics["sensitivity"] = metrics["recall_mutant"]
    metrics["specificity"] = metrics["recall_wildtype"]
    metrics.update(_two_class_metrics(labels, probs, predicted))
    return {key: metrics[key] for key in METRIC_KEYS}


def _confusion_counts(labels: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    counts = confusion_matrix(labels, predicted, labels=[0, 1]).ravel()
    return {key: float(value) for key, value in zip(COUNT_KEYS, counts)}


def _precision_recall_f1(labels: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    out: dict[str, float] = {}
    per_class = precision_recall_fscore_support(labels, predicted, labels=[0, 1], zero_division=np.nan)
    for name, values in zip(("precision", "recall", "f1"), per_class[:3]):
        for class_name, value in zip(CLASS_NAMES, values):
            out[f"{name}_{class_name}"] = float(value)
    for average in AVERAGES:
        averaged = precision_recall_fscore_support(
            labels, predicted, labels=[0, 1], average=average, zero_division=np.nan
        )
        for name, value in zip(("precision", "recall", "f1"), averaged[:3]):
            out[f"{name}_{average}"] = float(value)
    return out


def _two_class_metrics(labels: np.ndarray, probs: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    if not has_both_classes(labels):
        return {key: float("nan") for key in ("auc", "pr_auc", "mcc", "balanced_accuracy")}
    return {
        "auc": float(roc_auc_score(labels, probs)),
        "pr_auc": float(average_precision_score(labels, probs)),
        "mcc": float(matthews_corrcoef(labels, predicted)),
        "balanced_accuracy": float(balanced_accuracy_score(labels, predicted)),
    }
