"""Late fusion with clinical covariates: cross-fitted honestly, and applicable from its plain numbers."""

from __future__ import annotations

import numpy as np
from scipy.special import expit
from sklearn.metrics import roc_auc_score

from idhhpc.evaluate import fusion


def _cohort(n=300, seed=0):
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < 0.3).astype(int)
    probs = expit(rng.normal(0.8 * labels - 0.4, 1.0))  # a weak imaging score
    ages = rng.normal(np.where(labels == 1, 40, 62), 12)[:, None]  # a strong, independent covariate
    return labels, probs, ages, np.arange(n) % 3


def test_fusing_an_informative_covariate_beats_either_input_alone():
    labels, probs, ages, folds = _cohort()
    fused = fusion.cross_fitted(fusion.design(probs, ages), labels, folds)
    alone = fusion.cross_fitted(fusion.design(None, ages), labels, folds)
    assert roc_auc_score(labels, fused) > max(roc_auc_score(labels, probs), roc_auc_score(labels, alone)) + 0.01


def test_each_fold_is_scored_by_a_stacker_that_never_saw_its_rows():
    labels, probs, ages, folds = _cohort()
    features = fusion.design(probs, ages)
    before = fusion.cross_fitted(features, labels, folds)
    flipped = labels.copy()
    flipped[folds == 0] = 1 - flipped[folds == 0]  # fold 0's own labels change ...
    after = fusion.cross_fitted(features, flipped, folds)
    assert np.array_equal(before[folds == 0], after[folds == 0])  # ... and its scores do not
    assert not np.allclose(before[folds == 1], after[folds == 1])


def test_the_written_numbers_reproduce_the_fitted_stacker():
    labels, probs, ages, _ = _cohort()
    features = fusion.design(probs, ages)
    model = fusion.fitted(features, labels)
    plain = fusion.describe(model, ["network_logit", "age"])
    by_hand = expit(plain["intercept"] + ((features - plain["mean"]) / plain["scale"]) @ np.array(plain["coefficients"]))
    assert np.allclose(by_hand, model.predict_proba(features)[:, 1])
    assert plain["inputs"] == ["network_logit", "age"] and plain["coefficients"][1] < 0  # older: less likely mutant
