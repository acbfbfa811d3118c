"""The fold ensemble's probability and threshold (idhhpc.evaluate.ensemble)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import expit, logit

from idhhpc.evaluate.ensemble import fold_ensemble


def test_agreeing_models_give_each_ones_probability_and_threshold():
    probs = np.array([0.1, 0.4, 0.9])
    ensemble, threshold = fold_ensemble([probs, probs, probs], [0.3, 0.3, 0.3])
    assert ensemble == pytest.approx(probs)
    assert threshold == pytest.approx(0.3)


def test_a_fold_that_outputs_its_own_threshold_for_everyone_changes_no_call():
    """The failure this design is for: a fold that learned nothing says its prior to every
    patient; a probability mean with a pooled threshold then calls nobody mutant."""
    rng = np.random.default_rng(0)
    good = [rng.uniform(0.05, 0.95, 40) for _ in range(2)]
    thresholds = [0.7, 0.75]
    alone, cut = fold_ensemble(good, thresholds)
    with_dead, cut_dead = fold_ensemble([*good, np.full(40, 0.206)], [*thresholds, 0.206])
    assert np.array_equal(with_dead >= cut_dead, alone >= cut)
    assert (alone >= cut).any() and not (alone >= cut).all()
    naive = np.mean([*good, np.full(40, 0.206)], axis=0) >= np.mean(thresholds)  # what it replaces
    assert naive.sum() < (alone >= cut).sum()


def test_the_call_is_the_mean_margin_from_each_models_own_threshold():
    rng = np.random.default_rng(1)
    probs = [rng.uniform(0.01, 0.99, 25) for _ in range(3)]
    thresholds = [0.2, 0.5, 0.8]
    ensemble, threshold = fold_ensemble(probs, thresholds)
    margins = np.mean([logit(p) - logit(t) for p, t in zip(probs, thresholds)], axis=0)
    assert np.array_equal(ensemble >= threshold, margins >= 0)
    assert ensemble == pytest.approx(expit(np.mean(logit(probs), axis=0)))


def test_one_threshold_per_model_is_required():
    with pytest.raises(ValueError, match="one threshold per fold model"):
        fold_ensemble([np.array([0.5])], [0.5, 0.5])
    with pytest.raises(ValueError, match="one threshold per fold model"):
        fold_ensemble([], [])
