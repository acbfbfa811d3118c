"""Percentile confidence intervals from stratified bootstrap resampling of the test cases."""

from __future__ import annotations

import warnings

import numpy as np
from numpy.typing import ArrayLike

from idhhpc.evaluate.batch_metrics import batch_metrics
from idhhpc.evaluate.inputs import as_binary_arrays, has_both_classes
from idhhpc.evaluate.metrics import COUNT_KEYS, METRIC_KEYS

MAX_ELEMENTS_PER_CHUNK = 2_000_000
"""Bounds the (resamples x cases) matrices so a large test set cannot exhaust memory."""

INTERVAL_KEYS = tuple(key for key in METRIC_KEYS if key not in COUNT_KEYS)
"""Rates only: an interval on a raw confusion count says nothing the rates do not."""


def bootstrap_ci(
    y_true: ArrayLike,
    prob: ArrayLike,
    threshold: float,
    n_resamples: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict[str, tuple[float, float]]:
    """Return ``{metric: (low, high)}``, the ``alpha/2`` and ``1 - alpha/2`` percentiles over
    resamples drawn with replacement within each class.

    Resampling within each class keeps the class counts fixed, so every resample has both
    classes and AUC is always defined. With one class in ``y_true`` it warns and returns NaNs.
    """
    labels, probs = as_binary_arrays(y_true, prob)
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be at least 1, got {n_resamples}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    if not has_both_classes(labels):
        warnings.warn("bootstrap_ci: y_true holds one class only; intervals are NaN", RuntimeWarning, stacklevel=2)
        return {key: (float("nan"), float("nan")) for key in INTERVAL_KEYS}
    indices = stratified_resample_indices(labels, n_resamples, seed)
    samples = _metrics_in_chunks(labels, probs, threshold, indices)
    return {key: _percentile_interval(samples[key], alpha) for key in INTERVAL_KEYS}


def stratified_resample_indices(labels: np.ndarray, n_resamples: int, seed: int) -> np.ndarray:
    """Return ``(n_resamples, n)`` case indices, each row drawing every class's own count."""
    rng = np.random.default_rng(seed)
    per_class = [np.flatnonzero(labels == label) for label in (0, 1)]
    return np.concatenate([rng.choice(idx, size=(n_resamples, idx.size)) for idx in per_class], axis=1)


def _metrics_in_chunks(labels, probs, threshold, indices) -> dict[str, np.ndarray]:
    rows_per_chunk = max(1, MAX_ELEMENTS_PER_CHUNK // indices.shape[1])
    chunks = [
        batch_metrics(labels[block], probs[block], threshold)
        for block in np.array_split(indices, range(rows_per_chunk, len(indices), rows_per_chunk))
    ]
    return {key: np.concatenate([chunk[key] for chunk in chunks]) for key in chunks[0]}


def _percentile_interval(values: np.ndarray, alpha: float) -> tuple[float, float]:
    """Percentiles over the resamples where the metric is defined (a precision can be
    undefined when a resample has no predictions of that class)."""
    defined = values[~np.isnan(values)]
    if defined.size == 0:
        return float("nan"), float("nan")
    low, high = np.percentile(defined, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(low), float(high)
