"""The exported models of a work dir on a set of patients: the final fit and the fold ensemble.

The ``evaluate`` stage scores the test set with them, the ``external`` stage other cohorts; both
read the models through the one :class:`~idhhpc.predictor.Predictor`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
from torch.utils.data import Dataset

from idhhpc.config import JobConfig
from idhhpc.devices import resolve_device
from idhhpc.evaluate.ensemble import fold_ensemble
from idhhpc.predictor import Predictor
from idhhpc.workdir import FIT_RUN, WorkDir, fold_run_name


@dataclass
class TestScores:
    """One model's calibrated test probabilities and the threshold chosen for it on validation."""

    name: str
    probs: np.ndarray
    threshold: float
    history: list[dict] | None


def score_models(config: JobConfig, test: Dataset) -> dict[str, TestScores]:
    """The fit model and, when every fold exported one, the fold ensemble (their logit-space mean,
    with the same mean of their own thresholds: :mod:`idhhpc.evaluate.ensemble`)."""
    work, device = WorkDir(config.work_dir), resolve_device(config.train.device)
    models = {}
    if work.exported_model(FIT_RUN).is_file():
        fit = Predictor.load(work.exported_model(FIT_RUN), device)
        history = json.loads(work.selection(FIT_RUN).read_text())["history"]
        models[FIT_RUN] = TestScores(FIT_RUN, fit.predict_proba(test), fit.threshold, history)
    fold_models = [work.exported_model(fold_run_name(f)) for f in range(config.split.folds)]
    if all(path.is_file() for path in fold_models) and work.cv_summary.is_file():  # a finished cv stage's folds
        predictors = [Predictor.load(path, device) for path in fold_models]
        probs, threshold = fold_ensemble([p.predict_proba(test) for p in predictors], [p.threshold for p in predictors])
        models["folds"] = TestScores("folds", probs, threshold, None)
    if not models:
        raise FileNotFoundError(f"no trained model in {work.root / 'checkpoints'}: run the fit or cv stage first")
    return models
