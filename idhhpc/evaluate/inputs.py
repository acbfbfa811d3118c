"""Checks shared by every evaluation function: labels are 0/1, probabilities are finite in [0, 1]."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike


def as_binary_arrays(y_true: ArrayLike, prob: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(y_true as int64, prob as float64)`` after rejecting inputs that would give silent nonsense."""
    labels = np.asarray(y_true)
    probs = np.asarray(prob, dtype=np.float64)
    if labels.ndim != 1 or probs.ndim != 1:
        raise ValueError(f"y_true and prob must be 1-D, got shapes {labels.shape} and {probs.shape}")
    if labels.shape != probs.shape:
        raise ValueError(f"y_true has {labels.size} entries but prob has {probs.size}")
    if labels.size == 0:
        raise ValueError("y_true and prob are empty: nothing to evaluate")
    if not np.isin(labels, (0, 1)).all():
        raise ValueError(f"y_true must hold only 0 (wildtype) and 1 (mutant), got {np.unique(labels)[:10]}")
    if not np.isfinite(probs).all() or probs.min() < 0 or probs.max() > 1:
        raise ValueError("prob must hold finite probabilities in [0, 1] (probability of mutant)")
    return labels.astype(np.int64), probs


def has_both_classes(y_true: np.ndarray) -> bool:
    return bool(np.any(y_true == 0) and np.any(y_true == 1))
