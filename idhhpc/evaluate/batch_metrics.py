"""The metrics of ``compute_metrics`` for many resamples at once, in plain numpy.

Calling scikit-learn once per bootstrap resample costs ~10 ms x 1000; computing every metric
on a (resamples, cases) matrix costs milliseconds. Definitions match scikit-learn exactly
(undefined ratios are NaN, NaNs are left out of macro/weighted averages, MCC is 0 when its
denominator is 0, average precision is the step-wise sum over distinct scores), which
tests/evaluate/test_bootstrap.py checks against ``compute_metrics``.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

from idhhpc.constants import CLASS_NAMES


def batch_metrics(labels: np.ndarray, probs: np.ndarray, threshold: float) -> dict[str, np.ndarray]:
    """Return each metric as an array of shape ``(resamples,)`` for row-wise resamples
    ``labels`` (0/1) and ``probs`` of shape ``(resamples, cases)``; every row must hold both classes."""
    positive = labels == 1
    predicted = probs >= threshold
    tp = np.sum(predicted & positive, axis=1).astype(np.float64)
    fp = np.sum(predicted & ~positive, axis=1).astype(np.float64)
    fn = np.sum(~predicted & positive, axis=1).astype(np.float64)
    tn = np.sum(~predicted & ~positive, axis=1).astype(np.float64)
    out = _per_class_and_averages(tn, fp, fn, tp)
    out["accuracy"] = (tp + tn) / labels.shape[1]
    out["balanced_accuracy"] = (out["recall_mutant"] + out["recall_wildtype"]) / 2
    out["sensitivity"] = out["recall_mutant"]
    out["specificity"] = out["recall_wildtype"]
    out["mcc"] = _mcc(tn, fp, fn, tp)
    out["brier"] = np.mean((probs - labels) ** 2, axis=1)
    out["auc"] = _roc_auc(positive, probs)
    out["pr_auc"] = _average_precision(positive, probs)
    return out


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    out = np.full_like(numerator, np.nan)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def _per_class_and_averages(tn, fp, fn, tp) -> dict[str, np.ndarray]:
    per_class = {
        "precision": (_ratio(tn, tn + fn), _ratio(tp, tp + fp)),
        "recall": (_ratio(tn, tn + fp), _ratio(tp, tp + fn)),
        "f1": (_ratio(2 * tn, 2 * tn + fn + fp), _ratio(2 * tp, 2 * tp + fp + fn)),
    }
    support = np.stack([tn + fp, tp + fn])
    out: dict[str, np.ndarray] = {}
    for name, (wildtype, mutant) in per_class.items():
        out[f"{name}_{CLASS_NAMES[0]}"] = wildtype
        out[f"{name}_{CLASS_NAMES[1]}"] = mutant
        values = np.stack([wildtype, mutant])
        out[f"{name}_macro"] = _nan_weighted_mean(values, np.ones_like(values))
        out[f"{name}_weighted"] = _nan_weighted_mean(values, support)
    return out


def _nan_weighted_mean(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Average over axis 0 ignoring NaN entries and their weights, as scikit-learn does."""
    defined = ~np.isnan(values)
    weights = np.where(defined, weights, 0.0)
    return _ratio(np.sum(np.where(defined, values, 0.0) * weights, axis=0), np.sum(weights, axis=0))


def _mcc(tn, fp, fn, tp) -> np.ndarray:
    denominator = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return np.nan_to_num(_ratio(tp * tn - fp * fn, denominator), nan=0.0)


def _roc_auc(positive: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Mann-Whitney U / (P N), with tied scores counted as half, which equals the ROC area."""
    ranks = rankdata(probs, axis=1)
    n_pos = positive.sum(axis=1)
    n_neg = positive.shape[1] - n_pos
    rank_sum = np.sum(np.where(positive, ranks, 0.0), axis=1)
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def _average_precision(positive: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Mean over positives of the precision at the threshold equal to that positive's score
    (all cases tied at that score predicted positive): the step-wise AP of scikit-learn."""
    order = np.argsort(-probs, axis=1, kind="stable")
    scores = np.take_along_axis(probs, order, axis=1)
    hits = np.take_along_axis(positive, order, axis=1)
    cumulative_tp = np.cumsum(hits, axis=1)
    n = probs.shape[1]
    last_of_tie = np.concatenate([scores[:, :-1] != scores[:, 1:], np.ones((len(scores), 1), bool)], axis=1)
    tie_end = np.where(last_of_tie, np.arange(n), n)
    tie_end = np.minimum.accumulate(tie_end[:, ::-1], axis=1)[:, ::-1]
    precision_at_tie_end = np.take_along_axis(cumulative_tp, tie_end, axis=1) / (tie_end + 1)
    return np.sum(np.where(hits, precision_at_tie_end, 0.0), axis=1) / hits.sum(axis=1)
