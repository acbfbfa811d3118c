"""Stage ``evaluate``: the held-out test set, scored by the fold ensemble and by the final fit.

The headline model (``evaluate.ensemble``) writes ``reports/`` (metrics with bootstrap CIs,
predictions, figures, ``report.md``); the report also shows the other model, the classical
baseline and, for phantom cohorts, the Bayes-optimal score on the same test patients, the
calibration and the out-of-fold figures of the ``cv`` stage.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from idhhpc.config import JobConfig
from idhhpc.data.cohort import read_manifest
from idhhpc.data.dataset import ShardDataset
from idhhpc.data.splits import load_splits
from idhhpc.devices import resolve_device
from idhhpc.evaluate.crossval import Scored
from idhhpc.evaluate.exported import TestScores, score_models
from idhhpc.evaluate.mask_free import dice_metrics, locate_test_cases
from idhhpc.evaluate.metrics import compute_metrics
from idhhpc.evaluate.outputs import evaluate_predictions
from idhhpc.evaluate.report import cross_validation_section, link_gallery, models_table, scorers_table
from idhhpc.evaluate.scorers import (
    clinical_notes,
    clinical_test_metrics,
    clinical_test_scores,
    references_on_test,
)
from idhhpc.model.initialisation import describe_initialisation
from idhhpc.predictor import Predictor
from idhhpc.stages.checks import newer
from idhhpc.stages.step import Step
from idhhpc.tracking.records import log_evaluation
from idhhpc.tracking.runs import stage_run
from idhhpc.workdir import FIT_RUN, WorkDir, fold_run_name


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
        clinical = clinical_test_scores(config, test, headline.name, headline.probs)
        sections = report_sections(config, test, models, headline, clinical) + mask_free_lines
        metrics = evaluate_predictions(test.labels, headline.probs, headline.threshold, test.patient_ids,
                                       work.reports, history=headline.history, n_resamples=config.evaluate.bootstrap,
                                       seed=config.seed, sections=sections)
        if work.gallery.is_file():  # a skipped explain step keeps its gallery: the new report still links it
            link_gallery(work.report)
        other = {f"test/{m.name}_auc": compute_metrics(test.labels, m.probs, m.threshold)["auc"] for m in models.values()}
        other |= clinical_test_metrics(config, test, clinical) | mask_free_metrics
        served = work.exported_model(FIT_RUN)  # the model predict and the registry serve
        log_evaluation(run, config, work.reports, {k: v for k, v in other.items() if _finite(v)}
                       | cross_validation_summary(config), export=served if served.is_file() else None)
    return {"metrics": metrics, "model": headline.name, "threshold": headline.threshold}


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
    work, labels = WorkDir(config.work_dir), list(test.labels)

    def auc(probs: Any) -> str:
        return Scored.of(labels, list(probs), config.evaluate.bootstrap, config.seed).text()

    rows = []
    for model in models.values():
        metrics = compute_metrics(test.labels, model.probs, model.threshold)
        rows.append((_model_title(model.name, config), auc(model.probs.tolist()), metrics["accuracy"],
                     metrics["f1_weighted"], model.threshold))
    notes = clinical_notes(config.evaluate.clinical)
    scorers = list(references_on_test(config, test).items()) + [
        (f"{name} ({notes[name]})", scores) for name, scores in (clinical or {}).items()]
    lines = ["## Models", "", f"Headline: **{_model_title(headline.name, config)}**. {describe_initialisation(config)}",
             "", *models_table(rows), "",
             *scorers_table(auc(headline.probs.tolist()), [(name, auc(scores)) for name, scores in scorers]), ""]
    if work.cv_summary.is_file():
        lines += [*cross_validation_section(json.loads(work.cv_summary.read_text())), ""]
    return lines


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


def outputs_verify(config: JobConfig) -> bool:
    """The report and predictions are newer than every model and the out-of-fold summary."""
    work = WorkDir(config.work_dir)
    inputs = [work.exported_model(FIT_RUN), work.cv_summary,
              *(work.exported_model(fold_run_name(f)) for f in range(config.split.folds))]
    return newer(work.report, *inputs) and newer(work.predictions, *inputs)


def evaluate_outputs(config: JobConfig) -> list[Path]:
    """What later steps and readers take as the evaluation (``report.md`` is not one: explain
    appends the gallery's link to it)."""
    work = WorkDir(config.work_dir)
    return [work.predictions, work.metrics]


STEPS = (Step("evaluate", "evaluate", run_evaluate, outputs_verify=outputs_verify, outputs=evaluate_outputs,
              reads=("evaluate",), needs=("fit", "cv-summary")),)
