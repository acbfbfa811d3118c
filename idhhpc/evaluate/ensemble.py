"""The fold ensemble: one probability and one threshold from k fold models.

Each fold model comes with a temperature and a threshold fitted on its own validation patients,
so its threshold belongs to its own probability scale. Averaging the probabilities and applying
one threshold picked on the pooled out-of-fold probabilities mixes scales: averaging models that
disagree pulls the mean towards the middle, so a pooled threshold above the middle flags too few
test patients and one below it too many. A fold that learned nothing and outputs its prior for
everyone drags every mean towards that prior (measured: a 500-patient phantom job flagged none
of its 15 test mutants; ``benchmarks/RESULTS.md``, "Learning").

Instead the ensemble averages in logit space and its threshold is the same average of the fold
thresholds. ``mean_k logit(p_k) >= mean_k logit(t_k)`` is the same test as
``mean_k [logit(p_k) - logit(t_k)] >= 0``: each model votes with its margin from its own
validated operating point, so a fold outputting a constant at its own threshold votes zero,
and k agreeing models give exactly each one's probability and threshold.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import expit

from idhhpc.evaluate.calibration import probability_logit


def fold_ensemble(probs: Sequence[ArrayLike], thresholds: Sequence[float]) -> tuple[np.ndarray, float]:
    """``(P(mutant) per patient, threshold)`` of the fold models' logit-space mean.

    ``probs[k]`` are fold model k's calibrated probabilities, ``thresholds[k]`` its own
    validation threshold; predict mutant where the returned probability >= the returned threshold.
    """
    if len(probs) != len(thresholds) or not len(probs):
        raise ValueError(f"need one threshold per fold model, got {len(probs)} models and {len(thresholds)} thresholds")
    return expit(probability_logit(probs).mean(axis=0)), float(expit(probability_logit(thresholds).mean()))
