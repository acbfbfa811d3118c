"""Stage ``cv``: one training job per fold (a Slurm array on a cluster), then the out-of-fold summary.

Each fold is a submitit ``Checkpointable`` job: on Slurm's preemption or time-limit signal the
trainer saves ``last.pt`` at the next micro-step and the job is requeued, resuming exactly. The
summary step pools every fold's validation predictions into ``reports/cv/oof_predictions.csv``
(each non-test patient once) and scores them beside the classical baseline on the same folds and,
for phantom cohorts, the Bayes-optimal score on the same patients.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from idhhpc.atomic import atomic_write_json, atomic_write_text
from idhhpc.config import JobConfig
from idhhpc.data.splits import load_splits, non_test_patients, splits_fingerprint
from idhhpc.evaluate.crossval import (
    CrossValidationSummary,
    OutOfFold,
    Scored,
    pool_folds,
)
from idhhpc.evaluate.plots import plot_roc_comparison
from idhhpc.evaluate.scorers import (
    BASELINE,
    ORACLE,
    clinical_fused_name,
    clinical_only_name,
    out_of_fold_references,
)
from idhhpc.evaluate.report import cross_validation_section
from idhhpc.evaluate.thresholds import choose_threshold
from idhhpc.stages.checks import TRAINING_CONSUMES, TRAINING_NEEDS, newer, training_finished, training_reads
from idhhpc.stages.step import Step
from idhhpc.tracking.runs import stage_run
from idhhpc.train.fitting import train_run
from idhhpc.train.preemption import TrainingJob
from idhhpc.train.stopping import StopRequest
from idhhpc.workdir import WorkDir, fold_run_name

ROC_FIGURE = "oof_roc.png"


def fold_tasks(config: JobConfig) -> list[tuple]:
    return [(fold,) for fold in range(config.split.folds)]


def _cv_fold(config: JobConfig, fold: int, stop: StopRequest | None = None) -> dict[str, Any]:
    split = load_splits(config)["folds"][fold]
    return train_run(config, fold_run_name(fold), split["train"], split["val"], stop)


run_cv_fold = TrainingJob(_cv_fold)


def run_cv_summary(config: JobConfig) -> dict[str, Any]:
    """Write the out-of-fold predictions, their summary and report; log the summary to MLflow."""
    work, splits = WorkDir(config.work_dir), load_splits(config)
    with stage_run(config, "cv-summary") as run:
        selections = [json.loads(work.selection(fold_run_name(f)).read_text()) for f in range(config.split.folds)]
        oof = pool_folds(selections, non_test_patients(splits))
        curves = out_of_fold_references(config, splits, oof)
        summary = summarise(config, splits, oof, selections, curves)
        atomic_write_text(work.oof_predictions, oof.csv_text())
        atomic_write_json(work.cv_summary, summary.to_dict())
        _write_report(work, oof, curves, summary)
        run.log_metrics(summary.metrics())
        for path in (work.oof_predictions, work.cv_summary, work.cv_reports / ROC_FIGURE):
            run.log_artifact(path, "cv")
    return summary.to_dict()


def summarise(config: JobConfig, splits: dict[str, Any], oof: OutOfFold, selections: list[dict[str, Any]],
              scores: dict[str, list[float]]) -> CrossValidationSummary:
    resamples, seed = config.evaluate.bootstrap, config.seed
    scored = {name: Scored.of(oof.labels, values, resamples, seed) for name, values in scores.items()}
    names = config.evaluate.clinical
    return CrossValidationSummary(
        network=Scored.of(oof.labels, oof.probs, resamples, seed), baseline=scored.get(BASELINE),
        oracle=scored.get(ORACLE), oracle_coverage=len(scores.get(ORACLE, [])), clinical_inputs=list(names),
        clinical_only=scored.get(clinical_only_name(names)), with_clinical=scored.get(clinical_fused_name(names)),
        threshold=choose_threshold(oof.labels, oof.probs, config.evaluate.threshold),
        per_fold_auc=[float(s["val_auc"]) for s in selections], splits_fingerprint=splits_fingerprint(splits),
        takeoff_restarts=[len(s.get("takeoff", {}).get("failed", [])) for s in selections],
        dice=_mean_fold_dice(selections))


def _mean_fold_dice(selections: list[dict[str, Any]]) -> dict[str, float]:
    """The folds' last-epoch validation Dice per compartment, averaged (empty without a decoder)."""
    last = [s["history"][-1] for s in selections if s.get("history")]
    names = sorted({key for h in last for key in h if key.startswith("val/dice_")})
    return {name.removeprefix("val/dice_"): float(np.nanmean([h.get(name, np.nan) for h in last])) for name in names}


def _write_report(work: WorkDir, oof: OutOfFold, scores: dict[str, list[float]],
                  summary: CrossValidationSummary) -> None:
    curves = {"network": (oof.labels, oof.probs), **{name: (oof.labels, values) for name, values in scores.items()}}
    plot_roc_comparison(curves, work.cv_reports / ROC_FIGURE, "Out-of-fold ROC on the non-test patients")
    lines = ["# Cross-validation", "", *cross_validation_section(summary.to_dict()), "",
             f"![Out-of-fold ROC]({ROC_FIGURE})", ""]
    atomic_write_text(work.cv_reports / "report.md", "\n".join(lines))


def outputs_verify(config: JobConfig) -> bool:
    folds = load_splits(config)["folds"] if WorkDir(config.work_dir).splits.is_file() else []
    return len(folds) == config.split.folds and all(
        training_finished(config, fold_run_name(f), folds[f]) for f in range(config.split.folds))


def summary_verify(config: JobConfig) -> bool:
    """The summary is newer than every fold's selection and the folds' outputs verify."""
    work = WorkDir(config.work_dir)
    selections = [work.selection(fold_run_name(f)) for f in range(config.split.folds)]
    return outputs_verify(config) and newer(work.cv_summary, *selections) and newer(work.oof_predictions, *selections)


def summary_outputs(config: JobConfig) -> list[Path]:
    work = WorkDir(config.work_dir)
    return [work.cv_summary, work.oof_predictions]


STEPS = (
    Step("cv", "cv", run_cv_fold, tasks=fold_tasks, outputs_verify=outputs_verify, reads=training_reads,
         needs=TRAINING_NEEDS, consumes=TRAINING_CONSUMES),
    # threshold, bootstrap and clinical covariates of the out-of-fold summary
    Step("cv-summary", "cv", run_cv_summary, outputs_verify=summary_verify, outputs=summary_outputs,
         reads=("evaluate",), needs=("cv",)),
)
