import math

import numpy as np
import pytest

from idhhpc.evaluate.batch_metrics import batch_metrics
from idhhpc.evaluate.bootstrap import (
    INTERVAL_KEYS,
    bootstrap_ci,
    stratified_resample_indices,
)
from idhhpc.evaluate.metrics import compute_metrics


def _cohort(n_wildtype: int, n_mutant: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y_true = np.r_[np.zeros(n_wildtype, int), np.ones(n_mutant, int)]
    prob = np.clip(rng.normal(0.3 + 0.35 * y_true, 0.2), 0, 1)
    return y_true, prob


@pytest.mark.parametrize("seed", range(40))
def test_batch_metrics_equal_scikit_learn_definitions(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(4, 30))
    y_true = rng.integers(0, 2, n)
    y_true[:2] = [0, 1]
    prob = np.round(rng.random(n), 1)  # coarse scores force ties in AUC and AP
    threshold = float(rng.choice([0.0, 0.3, 0.5, 1.0, 1.01]))
    expected = compute_metrics(y_true, prob, threshold)
    batch = batch_metrics(y_true[None], prob[None], threshold)
    for key, values in batch.items():
        if math.isnan(expected[key]):
            assert math.isnan(values[0]), key
        else:
            assert values[0] == pytest.approx(expected[key], abs=1e-12), key


def test_resamples_keep_the_class_counts():
    y_true, _ = _cohort(30, 9)
    indices = stratified_resample_indices(y_true, n_resamples=50, seed=1)
    assert indices.shape == (50, 39)
    assert (y_true[indices].sum(axis=1) == 9).all()


def test_interval_contains_the_point_estimate():
    y_true, prob = _cohort(55, 20)
    metrics = compute_metrics(y_true, prob, 0.5)
    intervals = bootstrap_ci(y_true, prob, 0.5, n_resamples=500, seed=0)
    assert set(intervals) == set(INTERVAL_KEYS)
    for key in ("auc", "accuracy", "f1_weighted", "f1_mutant", "precision_weighted", "recall_weighted", "brier"):
        low, high = intervals[key]
        assert low < metrics[key] < high, key


def test_same_seed_reproduces_and_other_seed_differs():
    y_true, prob = _cohort(40, 15)
    first = bootstrap_ci(y_true, prob, 0.5, n_resamples=200, seed=7)
    assert bootstrap_ci(y_true, prob, 0.5, n_resamples=200, seed=7) == first
    assert bootstrap_ci(y_true, prob, 0.5, n_resamples=200, seed=8) != first


def test_interval_narrows_with_more_data():
    small = _cohort(20, 8, seed=3)
    large = tuple(np.tile(array, 8) for array in small)
    width = {}
    for name, (y_true, prob) in {"small": small, "large": large}.items():
        low, high = bootstrap_ci(y_true, prob, 0.5, n_resamples=400, seed=0)["auc"]
        width[name] = high - low
    assert width["large"] < 0.6 * width["small"]


def test_chunked_resampling_gives_the_same_intervals(monkeypatch):
    y_true, prob = _cohort(30, 10)
    whole = bootstrap_ci(y_true, prob, 0.5, n_resamples=100, seed=2)
    monkeypatch.setattr("idhhpc.evaluate.bootstrap.MAX_ELEMENTS_PER_CHUNK", 40 * 7)
    assert bootstrap_ci(y_true, prob, 0.5, n_resamples=100, seed=2) == whole


def test_one_class_input_warns_and_returns_nan():
    with pytest.warns(RuntimeWarning, match="one class"):
        intervals = bootstrap_ci(np.zeros(6, int), np.linspace(0, 1, 6), 0.5, n_resamples=20)
    assert all(math.isnan(low) and math.isnan(high) for low, high in intervals.values())


@pytest.mark.parametrize(("kwargs", "message"), [({"n_resamples": 0}, "n_resamples"), ({"alpha": 1.5}, "alpha")])
def test_bad_settings_are_rejected(kwargs, message):
    y_true, prob = _cohort(5, 5)
    with pytest.raises(ValueError, match=message):
        bootstrap_ci(y_true, prob, 0.5, **kwargs)
