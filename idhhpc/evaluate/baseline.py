"""A classical baseline beside the network: logistic regression on intensity statistics in the tumour.

It sees the same preprocessed volumes and the same folds as the network, but only a handful of
numbers per modality inside the tumour mask. A network that cannot beat it has not learnt what
the images show; the report says by how much it does. The tumour mask is used here to compute
the baseline's features, never as a network input.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from idhhpc.data.dataset import ShardDataset

PERCENTILES = (10, 25, 50, 75, 90)
STATISTICS = ("mean", "std", *(f"p{q}" for q in PERCENTILES))


def tumour_features(index_path: Path, patient_ids: list[str]) -> np.ndarray:
    """(patients, modalities x statistics): mean, std and percentiles of each modality inside the
    tumour mask; NaN for a patient without tumour voxels (imputed by the model)."""
    dataset = ShardDataset(index_path, patient_ids, with_masks=True)
    modalities = len(dataset.index["modalities"])  # not the coordinate channels, if any
    rows = []
    for position in range(len(dataset)):
        item = dataset[position]
        image, tumour = item["image"].numpy()[:modalities], item["tumor"].numpy() > 0
        rows.append(np.concatenate([_statistics(channel[tumour]) for channel in image]))
    return np.asarray(rows, dtype=np.float64)


def _statistics(values: np.ndarray) -> np.ndarray:
    if values.size == 0:
        return np.full(len(STATISTICS), np.nan)
    return np.concatenate([[values.mean(), values.std()], np.percentile(values, PERCENTILES)])


def baseline_model(seed: int = 0) -> Pipeline:
    """Standardised features, L2 logistic regression, classes weighted by inverse frequency."""
    return make_pipeline(SimpleImputer(strategy="median"), StandardScaler(),
                         LogisticRegression(C=1.0, class_weight="balanced", max_iter=2000, random_state=seed))


def out_of_fold_probabilities(features: dict[str, np.ndarray], labels: dict[str, int],
                              folds: list[dict[str, list[str]]], seed: int = 0) -> dict[str, float]:
    """P(mutant) of every validation patient of ``folds`` from a baseline fitted on that fold's
    training patients: the baseline's out-of-fold predictions on the network's own folds."""
    probs: dict[str, float] = {}
    for fold in folds:
        model = fit_baseline(features, labels, fold["train"], seed)
        for pid, prob in zip(fold["val"], model.predict_proba(np.stack([features[p] for p in fold["val"]]))[:, 1]):
            probs[pid] = float(prob)
    return probs


def fit_baseline(features: dict[str, np.ndarray], labels: dict[str, int], patient_ids: list[str],
                 seed: int = 0) -> Pipeline:
    return baseline_model(seed).fit(np.stack([features[p] for p in patient_ids]), [labels[p] for p in patient_ids])
