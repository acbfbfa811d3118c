"""Late fusion of the network's score with clinical covariates (``evaluate.clinical: [age]``).

Age alone separates IDH-mutant from wildtype gliomas well (mutant patients are typically two
decades younger), so a user wants to know what imaging adds to it. The fused model is a
logistic regression on the network's logit and the standardised covariates, stacked on the
out-of-fold predictions: every non-test patient's score comes from a fold model that never saw
them, so the stacker learns how far to trust the network from honest scores. Its own
out-of-fold figure is cross-fitted the same way (the stacker that scores fold ``k`` is fitted
on the other folds' rows). The network never sees a covariate, so the imaging-only figures stay
the headline.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import PredefinedSplit, cross_val_predict
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from idhhpc.evaluate.calibration import probability_logit

EPSILON = 1e-6


def design(probs: np.ndarray, covariates: np.ndarray | None) -> np.ndarray:
    """Columns of the stacker: the network's logit (if ``probs`` is given) and the covariates."""
    columns = [] if probs is None else [probability_logit(probs, EPSILON)[:, None]]
    if covariates is not None:
        columns.append(np.asarray(covariates, np.float64))
    return np.hstack(columns)


def stacker() -> Pipeline:
    """Standardise, then an L2-penalised logistic regression (few parameters, no tuning: C=1)."""
    return make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=1000))


def cross_fitted(features: np.ndarray, labels: np.ndarray, folds: np.ndarray) -> np.ndarray:
    """P(mutant) of every row from a stacker fitted on the other folds' rows only (scikit-learn's
    ``cross_val_predict`` on the job's own folds). Raises ``ValueError`` when the other folds of
    some fold hold one class only."""
    return cross_val_predict(stacker(), features, labels, cv=PredefinedSplit(folds), method="predict_proba")[:, 1]


def fitted(features: np.ndarray, labels: np.ndarray) -> Pipeline:
    return stacker().fit(features, labels)


def describe(model: Pipeline, names: list[str]) -> dict[str, Any]:
    """The fitted stacker as plain numbers (for ``clinical_fusion.json``): enough to apply it
    without this code, ``logit P = intercept + sum coef * (x - mean) / scale``."""
    scaler, regression = model.named_steps["standardscaler"], model.named_steps["logisticregression"]
    return {"inputs": names, "mean": scaler.mean_.tolist(), "scale": scaler.scale_.tolist(),
            "coefficients": regression.coef_[0].tolist(), "intercept": float(regression.intercept_[0])}
