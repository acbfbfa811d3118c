"""Stage ``evaluate``: the held-out test set, scored by the fold ensemble and by the final fit.

The headline model (``evaluate.ensemble``) writes ``reports/`` (metrics with bootstrap CIs,
predictions, figures, ``report.md``); the report also shows the other model, the classical
baseline and, for phantom cohorts, the Bayes-optimal score on the same test patients, the
calibration and the out-of-fold figures of the ``cv`` stage.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from idhhpc.atomic import atomic_write_json
from idhhpc.config import JobConfig
from idhhpc.data.clinical import read_covariates
from idhhpc.data.cohort import read_manifest
from idhhpc.data.dataset import ShardDataset
from idhhpc.data.oracle import load_oracle
from idhhpc.data.splits import load_splits, non_test_patients
from idhhpc.devices import resolve_device
from idhhpc.evaluate import baseline, fusion
from idhhpc.evaluate.crossval import Scored
from idhhpc.evaluate.ensemble import fold_ensemble
from idhhpc.evaluate.mask_free import dice_metrics, locate_test_cases
from idhhpc.evaluate.metrics import compute_metrics
from idhhpc.evaluate.outputs import evaluate_predictions
from idhhpc.evaluate.report import cross_validation_section
from idhhpc.model.initialisation import describe_initialisation
from idhhpc.predictor import Predictor
from idhhpc.stages.checks import newer, same_sections
from idhhpc.stages.cv import clinical_fused_name, clinical_only_name, fold_run_name
from idhhpc.stages.fit import RUN_NAME as FIT_RUN
from idhhpc.stages.step import Step
from idhhpc.tracking.records import log_evaluation
from idhhpc.tracking.runs import stage_run
from idhhpc.workdir import WorkDir

log = logging.getLogger(__name__)


@dataclass
class TestScores:
    """One model's calibrated test probabilities and the threshold chosen for it on validation."""

    name: str
    probs: np.ndarray
    threshold: float
    history: list[dict] | None


def run_evaluate(config: JobConfig) -> dict[str, Any]:
    work = WorkDir(config.work_dir)
    test_ids = load_splits(config)["test"]
    with stage_run(config, "evaluate", patients={"test": test_ids}) as run:
        test = ShardDataset(work.index, test_ids)
        models = score_models(config, test)
        headline = models.get(config.evaluate.ensemble) or models.get(FIT_RUN) or next(iter(models.values()))
        mask_free, mask_free_lines, mask_free_metrics = mask_free_scores(config, test, models, headline)
        if mask_free is not None:  # what a new patient gets: the headline from the four modalities alone
            headline = mask_free
        clinical = clinical_test_scores(config, test, headline)
        sections = report_sections(config, test, models, headline, clinical) + mask_free_lines
        metrics = evaluate_predictions(test.labels, headline.probs, headline.threshold, test.patient_ids,
                                       work.reports, history=headline.history, n_resamples=config.evaluate.bootstrap,
                                       seed=config.seed, sections=sections)
        other = {f"test/{m.name}_auc": compute_metrics(test.labels, m.probs, m.threshold)["auc"] for m in models.values()}
        other |= clinical_test_metrics(config, test, clinical) | mask_free_metrics
        served = work.exported_model(FIT_RUN)  # the model predict and the registry serve
        log_evaluation(run, config, work.reports, {k: v for k, v in other.items() if _finite(v)}
                       | cross_validation_summary(config), export=served if served.is_file() else None)
    return {"metrics": metrics, "model": headline.name, "threshold": headline.threshold}


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


def mask_free_scores(config: JobConfig, test: ShardDataset, models: dict[str, TestScores], headline: TestScores
                     ) -> tuple[TestScores | None, list[str], dict[str, float]]:
    """With a tumour locator in the fit export: every model on the located cubes of the test
    patients (:mod:`idhhpc.evaluate.mask_free`). Returns the mask-free headline (None when there is
    no locator or it missed a patient), the report lines and the MLflow metrics."""
    work = WorkDir(config.work_dir)
    if not work.exported_model(FIT_RUN).is_file():
        return None, [], {}
    fit = Predictor.load(work.exported_model(FIT_RUN), resolve_device(config.train.device))
    if fit.locator is None:
        return None, [], {}
    by_id = {c.patient_id: c for c in read_manifest(work.manifest, config.data.modalities)}
    cases = [by_id[pid] for pid in test.patient_ids]
    cubes = locate_test_cases(cases, fit)
    if cubes.rejected:
        return None, [f"Mask-free test: the locator found no tumour in {len(cubes.rejected)} patient(s) "
                      f"({', '.join(sorted(cubes.rejected))}); the headline keeps the expert crop.", ""], {}
    located = score_models(config, [{"image": torch.from_numpy(image.astype(np.float32))} for image in cubes.images])
    labels, resamples = list(test.labels), config.evaluate.bootstrap
    lines = ["## Without the expert mask", "",
             "Each test patient preprocessed again without its tumour segmentation: the fit model's tumour "
             "locator chose the crop. The headline above is this row's model.", "",
             "| model | mask-free test AUC [95 % CI] | same call as with the expert crop |", "| --- | --- | --- |"]
    metrics = {}
    for name, scores in located.items():
        agree = float(np.mean((scores.probs >= scores.threshold) == (models[name].probs >= models[name].threshold)))
        lines.append(f"| {_model_title(name, config)} | {Scored.of(labels, scores.probs.tolist(), resamples, config.seed).text()}"
                     f" | {agree:.0%} |")
        metrics |= {f"test/mask_free_{name}_auc": compute_metrics(labels, scores.probs, scores.threshold)["auc"],
                    f"test/mask_free_{name}_agreement": agree}
    dice = cubes.mean_dice()
    lines += ["", "Predicted tumour (fit model, located crop, native grid) against the expert mask, mean Dice: "
              + ", ".join(f"{k} {v:.3f}" for k, v in dice.items()) + ".", ""]
    mask_free = located[headline.name]
    mask_free = TestScores(f"{headline.name}", mask_free.probs, mask_free.threshold, headline.history)
    return mask_free, lines, metrics | dice_metrics(dice)


def report_sections(config: JobConfig, test: ShardDataset, models: dict[str, TestScores],
                    headline: TestScores, clinical: dict[str, list[float]] | None = None) -> list[str]:
    work = WorkDir(config.work_dir)
    lines = ["## Models", "", f"Headline: **{_model_title(headline.name, config)}**. {describe_initialisation(config)}",
             "", "| model | test AUC [95 % CI] | accuracy | F1 (weighted) | threshold |", "| --- | --- | --- | --- | --- |"]
    for model in models.values():
        metrics = compute_metrics(test.labels, model.probs, model.threshold)
        scored = Scored.of(list(test.labels), model.probs.tolist(), config.evaluate.bootstrap, config.seed)
        lines.append(f"| {_model_title(model.name, config)} | {scored.text()} | {metrics['accuracy']:.3f} | "
                     f"{metrics['f1_weighted']:.3f} | {model.threshold:.3f} |")
    lines += ["", *reference_scorers(config, test, headline, clinical or {}), ""]
    if work.cv_summary.is_file():
        lines += [*cross_validation_section(json.loads(work.cv_summary.read_text())), ""]
    return lines


def reference_scorers(config: JobConfig, test: ShardDataset, headline: TestScores,
                      clinical: dict[str, list[float]]) -> list[str]:
    """The classical baseline (fitted on every non-test patient), the Bayes optimum and the
    clinical scorers (``evaluate.clinical``) on the test patients."""
    labels, rows = list(test.labels), []
    features = baseline.tumour_features(test.index_path, list(test.patient_ids))
    if (features == features).any():
        train_ids = non_test_patients(load_splits(config))
        train_features = baseline.tumour_features(test.index_path, train_ids)
        model = baseline.fit_baseline(dict(zip(train_ids, train_features)), load_splits(config)["labels"], train_ids,
                                      config.seed)
        rows.append(("classical baseline (tumour intensity statistics)", model.predict_proba(features)[:, 1].tolist()))
    oracle = load_oracle(config)
    if oracle and all(pid in oracle for pid in test.patient_ids):
        rows.append(("Bayes-optimal score (phantom oracle)", [oracle[pid] for pid in test.patient_ids]))
    notes = _clinical_notes(config.evaluate.clinical)
    rows += [(f"{name} ({notes[name]})", scores) for name, scores in clinical.items()]
    if not rows:
        return []
    resamples, seed = config.evaluate.bootstrap, config.seed
    lines = ["On the same test patients:", "", "| scorer | test AUC [95 % CI] |", "| --- | --- |",
             f"| headline model | {Scored.of(labels, headline.probs.tolist(), resamples, seed).text()} |"]
    return lines + [f"| {name} | {Scored.of(labels, scores, resamples, seed).text()} |" for name, scores in rows]


def _clinical_notes(names: list[str]) -> dict[str, str]:
    """What each row of :func:`clinical_test_scores` is, for the report."""
    return {clinical_only_name(names): "logistic regression fitted on the out-of-fold patients; not imaging",
            clinical_fused_name(names): "headline model fused by a logistic regression fitted on the out-of-fold "
                                        "predictions; not imaging-only"}


def clinical_test_scores(config: JobConfig, test: ShardDataset, headline: TestScores) -> dict[str, list[float]]:
    """With ``evaluate.clinical`` and the cv stage's out-of-fold predictions: the test patients
    scored by the covariates alone and by the headline model fused with them, both stackers
    fitted on the out-of-fold rows (:mod:`idhhpc.evaluate.fusion`); written to ``clinical_fusion.json``."""
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
              clinical_fused_name(names): fused.predict_proba(fusion.design(headline.probs, test_covariates))[:, 1].tolist()}
    atomic_write_json(work.clinical_fusion, {
        "fitted_on": "out-of-fold predictions of the cv stage", "n": len(oof_ids), "headline_model": headline.name,
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


def _model_title(name: str, config: JobConfig) -> str:
    return f"mean of the {config.split.folds} fold models" if name == "folds" else "final fit (70/15 split)"


def cross_validation_summary(config: JobConfig) -> dict[str, float]:
    """Mean and spread of the folds' validation AUC and the pooled out-of-fold AUC (and, with
    ``evaluate.clinical``, the clinical rows' out-of-fold AUCs), when cv ran."""
    work = WorkDir(config.work_dir)
    selections = [work.selection(fold_run_name(fold)) for fold in range(config.split.folds)]
    aucs = [a for a in (json.loads(p.read_text())["val_auc"] for p in selections if p.is_file()) if _finite(a)]
    summary = {"cv/mean_auc": float(np.mean(aucs)), "cv/std_auc": float(np.std(aucs)),
               "cv/folds": float(len(aucs))} if aucs else {}
    if work.cv_summary.is_file():
        pooled = json.loads(work.cv_summary.read_text())
        summary["cv/oof_auc"] = pooled["network"]["auc"]
        if config.evaluate.clinical and pooled.get("with_clinical") and pooled.get("clinical_only"):
            summary["cv/oof_auc_with_clinical"] = pooled["with_clinical"]["auc"]
            summary["cv/clinical_only_oof_auc"] = pooled["clinical_only"]["auc"]
    return {k: float(v) for k, v in summary.items() if _finite(v)}


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def outputs_verify(config: JobConfig, previous: JobConfig | None) -> bool:
    """The report and predictions are newer than every model and the out-of-fold summary, and
    ``evaluate`` is unchanged."""
    work = WorkDir(config.work_dir)
    inputs = [work.exported_model(FIT_RUN), work.cv_summary,
              *(work.exported_model(fold_run_name(f)) for f in range(config.split.folds))]
    return (newer(work.report, *inputs) and newer(work.predictions, *inputs)
            and same_sections(config, previous, "data", "evaluate"))


STEPS = (Step("evaluate", "evaluate", run_evaluate, outputs_verify=outputs_verify),)
