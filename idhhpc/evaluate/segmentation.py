"""Dice of predicted tumour compartments against a reference mask, per patient and pooled.

One score per compartment (necrosis, edema, enhancing, in ``TUMOR_SUBREGIONS``) and for the
whole tumour (any compartment), as BraTS reports them. A compartment absent from both masks has
no Dice (NaN, left out of means) rather than a perfect one, so a model is not rewarded for the
compartments a phenotype does not have.
"""

from __future__ import annotations

import math
from typing import Iterable

import numpy as np

from idhhpc.constants import TUMOR_LABELS, TUMOR_SUBREGIONS

WHOLE_TUMOR = "tumor"
DICE_NAMES = (*TUMOR_SUBREGIONS, WHOLE_TUMOR)


def dice(prediction: np.ndarray, reference: np.ndarray) -> float:
    """2|A∩B| / (|A|+|B|) of two boolean masks; NaN when both are empty."""
    prediction, reference = np.asarray(prediction, bool), np.asarray(reference, bool)
    total = int(prediction.sum()) + int(reference.sum())
    return math.nan if total == 0 else 2.0 * int(np.logical_and(prediction, reference).sum()) / total


def compartment_dice(prediction: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Dice per compartment and for the whole tumour, of two label maps in TUMOR_LABELS values."""
    scores = {name: dice(prediction == label, reference == label) for name, label in TUMOR_SUBREGIONS.items()}
    scores[WHOLE_TUMOR] = dice(prediction != 0, reference != 0)
    return scores


def class_indices_to_labels(classes: np.ndarray) -> np.ndarray:
    """Decoder class indices (0..3) → tumour label values (0, 1, 2, 4)."""
    return np.asarray(TUMOR_LABELS, dtype=np.uint8)[np.asarray(classes, dtype=np.int64)]


def mean_dice(per_patient: Iterable[dict[str, float]]) -> dict[str, float]:
    """The mean over patients of each Dice, ignoring NaN (NaN if no patient has one)."""
    rows = list(per_patient)
    means = {}
    for name in DICE_NAMES:
        values = [row[name] for row in rows if name in row and not math.isnan(row[name])]
        means[name] = float(np.mean(values)) if values else math.nan
    return means
