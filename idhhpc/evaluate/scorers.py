"""The reference scorers beside the network, in one place: the classical baseline, the Bayes
optimum of a phantom cohort and the clinical covariates (alone and fused with the network).

Out of fold (the ``cv-summary`` step) each is scored on the same patients and folds as the
network's pooled predictions; on the test set (``evaluate``) the baseline is fitted on every
non-test patient and the clinical stackers on the out-of-fold predictions
(:mod:`idhhpc.evaluate.fusion`). Rendering is :mod:`idhhpc.evaluate.report`'s.
"""

from __future__ import annotations

import csv
import logging
from typing import Any

import numpy as np

from idhhpc.atomic import atomic_write_json
from idhhpc.config import JobConfig
from idhhpc.data.clinical import read_covariates
from idhhpc.data.dataset import ShardDataset
from idhhpc.data.oracle import load_oracle
from idhhpc.data.splits import load_splits, non_test_patients
from idhhpc.evaluate import baseline, fusion
from idhhpc.evaluate.crossval import OutOfFold
from idhhpc.evaluate.metrics import compute_metrics
from idhhpc.workdir import WorkDir

log = logging.getLogger(__name__)

BASELINE, ORACLE = "classical baseline", "Bayes optimum"
TEST_BASELINE, TEST_ORACLE = "classical baseline (tumour intensity statistics)", "Bayes-optimal score (phantom oracle)"


def clinical_only_name(names: list[str]) -> str:
    return f"{' + '.join(names)} alone"


def clinical_fused_name(names: list[str]) -> str:
    return f"network + {' + '.join(names)}"


def clinical_notes(names: list[str]) -> dict[str, str]:
    """What each clinical row of the test report is."""
    return {clinical_only_name(names): "logistic regression fitted on the out-of-fold patients; not imaging",
            clinical_fused_name(names): "headline model fused by a logistic regression fitted on the out-of-fold "
                                        "predictions; not imaging-only"}


def out_of_fold_references(config: JobConfig, splits: dict[str, Any], oof: OutOfFold) -> dict[str, list[float]]:
    """Scores of the out-of-fold patients by the classical baseline on the same folds (when tumour
    masks exist), by the Bayes optimum (when the phantom cohort knows it for every one of them)
    and, with ``evaluate.clinical``, by the covariates alone and fused, cross-fitted on the folds."""
    scores: dict[str, list[float]] = {}
    features = baseline.tumour_features(WorkDir(config.work_dir).index, oof.patient_ids)
    if (features == features).any():
        probs = baseline.out_of_fold_probabilities(dict(zip(oof.patient_ids, features)), splits["labels"],
                                                   splits["folds"], config.seed)
        scores[BASELINE] = [probs[pid] for pid in oof.patient_ids]
    oracle = load_oracle(config)
    if oracle and all(pid in oracle for pid in oof.patient_ids):
        scores[ORACLE] = [oracle[pid] for pid in oof.patient_ids]
    return scores | _clinical_out_of_fold(config, oof)


def _clinical_out_of_fold(config: JobConfig, oof: OutOfFold) -> dict[str, list[float]]:
    names = config.evaluate.clinical
    if not names:
        return {}
    covariates = read_covariates(config, oof.patient_ids)
    labels, folds = np.asarray(oof.labels), np.asarray(oof.folds)
    try:
        alone = fusion.cross_fitted(fusion.design(None, covariates), labels, folds)
        fused = fusion.cross_fitted(fusion.design(np.asarray(oof.probs), covariates), labels, folds)
    except ValueError as err:  # the other folds of some fold hold one class only
        log.warning("evaluate.clinical: no out-of-fold clinical figures (%s)", err)
        return {}
    return {clinical_only_name(names): alone.tolist(), clinical_fused_name(names): fused.tolist()}


def references_on_test(config: JobConfig, test: ShardDataset) -> dict[str, list[float]]:
    """The test patients scored by the classical baseline (fitted on every non-test patient) and
    by the Bayes optimum, when each can score them all."""
    rows: dict[str, list[float]] = {}
    features = baseline.tumour_features(test.index_path, list(test.patient_ids))
    if (features == features).any():
        splits = load_splits(config)
        train_ids = non_test_patients(splits)
        train_features = baseline.tumour_features(test.index_path, train_ids)
        model = baseline.fit_baseline(dict(zip(train_ids, train_features)), splits["labels"], train_ids, config.seed)
        rows[TEST_BASELINE] = model.predict_proba(features)[:, 1].tolist()
    oracle = load_oracle(config)
    if oracle and all(pid in oracle for pid in test.patient_ids):
        rows[TEST_ORACLE] = [oracle[pid] for pid in test.patient_ids]
    return rows


def clinical_test_scores(config: JobConfig, test: ShardDataset, headline_name: str,
                         headline_probs: np.ndarray) -> dict[str, list[float]]:
    """With ``evaluate.clinical`` and the cv stage's out-of-fold predictions: the test patients
    scored by the covariates alone and by the headline model fused with them, both stackers
    fitted on the out-of-fold rows; written to ``clinical_fusion.json``."""
    names, work = list(config.evaluate.clinical), WorkDir(config.work_dir)
    work.clinical_fusion.unlink(missing_ok=True)  # never leave an earlier job's fusion beside this report
    if not names:
        return {}
    if not work.oof_predictions.is_file():
        log.warning("evaluate.clinical needs the out-of-fold predictions of the cv stage (%s): not fused",
                    work.oof_predictions)
        return {}
    with open(work.oof_predictions, newline="") as fh:
        oof = list(csv.DictReader(fh))
    oof_ids, labels = [r["patient_id"] for r in oof], np.array([int(r["label"]) for r in oof])
    oof_covariates, test_covariates = read_covariates(config, oof_ids), read_covariates(config, list(test.patient_ids))
    oof_probs = np.array([float(r["prob_mutant"]) for r in oof])
    alone = fusion.fitted(fusion.design(None, oof_covariates), labels)
    fused = fusion.fitted(fusion.design(oof_probs, oof_covariates), labels)
    scores = {clinical_only_name(names): alone.predict_proba(fusion.design(None, test_covariates))[:, 1].tolist(),
              clinical_fused_name(names): fused.predict_proba(fusion.design(headline_probs, test_covariates))[:, 1].tolist()}
    atomic_write_json(work.clinical_fusion, {
        "fitted_on": "out-of-fold predictions of the cv stage", "n": len(oof_ids), "headline_model": headline_name,
        "clinical_only": fusion.describe(alone, names), "fused": fusion.describe(fused, ["network_logit", *names]),
        "test": {"patient_ids": list(test.patient_ids), **scores}})
    return scores


def clinical_test_metrics(config: JobConfig, test: ShardDataset, clinical: dict[str, list[float]]) -> dict[str, float]:
    """MLflow metrics of the report's two clinical rows."""
    names, labels = list(config.evaluate.clinical), list(test.labels)
    if not clinical:
        return {}
    return {"test/auc_with_clinical": compute_metrics(labels, np.array(clinical[clinical_fused_name(names)]), 0.5)["auc"],
            "test/clinical_only_auc": compute_metrics(labels, np.array(clinical[clinical_only_name(names)]), 0.5)["auc"]}
