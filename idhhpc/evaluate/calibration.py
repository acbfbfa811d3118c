"""Calibrated probabilities: temperature scaling fitted on validation, and how calibrated they are.

A network trained on a few hundred volumes is typically over-confident; temperature scaling
(Guo et al., 2017) divides the logit by one number fitted to minimise the validation negative
log-likelihood. It keeps the ranking (AUC) and makes P(mutant) mean what it says, which the
threshold, the fold ensemble's average and a clinician reading 0.9 all rely on. For two classes
the softmax of the logits is the sigmoid of their difference, so the probability is all it needs.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from scipy.optimize import minimize_scalar
from scipy.special import expit, logit
from sklearn.linear_model import LogisticRegression

from idhhpc.evaluate.inputs import as_binary_arrays

EPSILON = 1e-7
LOG_TEMPERATURE_BOUNDS = (-3.0, 3.0)
"""Temperatures between about 0.05 and 20: beyond, the validation set is too small to tell."""


def probability_logit(probs: ArrayLike, epsilon: float = EPSILON) -> np.ndarray:
    """``log(p / (1 - p))`` in float64, with ``p`` clipped to ``[epsilon, 1 - epsilon]`` so that a
    saturated 0 or 1 gives a large finite logit instead of an infinite one."""
    return logit(np.clip(np.asarray(probs, dtype=np.float64), epsilon, 1 - epsilon))


def apply_temperature(probs: ArrayLike, temperature: float) -> np.ndarray:
    """P(mutant) after dividing the logit by ``temperature`` (1 leaves it unchanged)."""
    return expit(probability_logit(probs) / temperature)


def negative_log_likelihood(y_true: ArrayLike, probs: ArrayLike) -> float:
    labels, values = as_binary_arrays(y_true, probs)
    values = np.clip(values, EPSILON, 1 - EPSILON)
    return float(-np.mean(labels * np.log(values) + (1 - labels) * np.log(1 - values)))


def fit_temperature(y_true: ArrayLike, probs: ArrayLike) -> float:
    """The temperature that minimises the negative log-likelihood of ``probs`` on ``y_true``."""
    labels, values = as_binary_arrays(y_true, probs)
    result = minimize_scalar(lambda log_t: negative_log_likelihood(labels, apply_temperature(values, np.exp(log_t))),
                             bounds=LOG_TEMPERATURE_BOUNDS, method="bounded")
    best = float(np.exp(result.x))
    # The bounded search never evaluates T = 1 exactly; keep it when it is at least as good.
    return best if negative_log_likelihood(labels, apply_temperature(values, best)) < negative_log_likelihood(
        labels, values) else 1.0


def expected_calibration_error(y_true: ArrayLike, probs: ArrayLike, bins: int = 10) -> float:
    """Mean |observed mutant rate - mean P(mutant)| over equal-width probability bins, weighted by
    the share of cases in each bin."""
    labels, values = as_binary_arrays(y_true, probs)
    which = np.minimum((values * bins).astype(int), bins - 1)
    error = 0.0
    for b in range(bins):
        members = which == b
        if members.any():
            error += members.mean() * abs(labels[members].mean() - values[members].mean())
    return float(error)


def reliability_bins(y_true: ArrayLike, probs: ArrayLike, bins: int = 10) -> list[tuple[float, float, int]]:
    """(mean predicted, observed rate, count) of every non-empty bin, for the reliability diagram."""
    labels, values = as_binary_arrays(y_true, probs)
    which = np.minimum((values * bins).astype(int), bins - 1)
    return [(float(values[which == b].mean()), float(labels[which == b].mean()), int((which == b).sum()))
            for b in range(bins) if (which == b).any()]


def calibration_slope_intercept(y_true: ArrayLike, probs: ArrayLike) -> tuple[float, float]:
    """(slope, intercept) of the logistic recalibration ``logit P(y) = a + b logit(p)`` on these
    patients: 1 and 0 when calibrated; a slope below 1 means over-confident probabilities, an
    intercept away from 0 a shifted base rate (what a new site does). NaN for one class only."""
    labels, values = as_binary_arrays(y_true, probs)
    if labels.min() == labels.max():
        return float("nan"), float("nan")
    model = LogisticRegression(C=np.inf, max_iter=1000).fit(probability_logit(values)[:, None], labels)
    return float(model.coef_[0, 0]), float(model.intercept_[0])
