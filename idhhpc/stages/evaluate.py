"""Stage ``evaluate``: the exported model on the held-out test set, at the threshold chosen on validation.

Writes ``reports/`` (metrics with bootstrap CIs, predictions, figures, ``report.md``) and logs
the test metrics, with the cross-validation summary, to MLflow.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from idhhpc.config import JobConfig
from idhhpc.data.dataset import ShardDataset
from idhhpc.data.splits import load_splits
from idhhpc.devices import resolve_device
from idhhpc.evaluate.outputs import evaluate_predictions
from idhhpc.predictor import Predictor
from idhhpc.stages.checks import newer, same_sections
from idhhpc.stages.cv import fold_run_name
from idhhpc.stages.fit import RUN_NAME as FIT_RUN
from idhhpc.stages.step import Step
from idhhpc.tracking.records import log_evaluation
from idhhpc.tracking.runs import stage_run
from idhhpc.workdir import WorkDir


def run_evaluate(config: JobConfig) -> dict[str, Any]:
    work = WorkDir(config.work_dir)
    test_ids = load_splits(config)["test"]
    with stage_run(config, "evaluate", patients={"test": test_ids}) as run:
        predictor = Predictor.load(work.exported_model(FIT_RUN), resolve_device(config.train.device))
        history = json.loads(work.selection(FIT_RUN).read_text())["history"]
        test = ShardDataset(work.index, test_ids)
        probs = predictor.predict_proba(test)
        metrics = evaluate_predictions(test.labels, probs, predictor.threshold, test.patient_ids, work.reports,
                                       history=history, n_resamples=config.evaluate.bootstrap, seed=config.seed)
        cv = cross_validation_summary(config)
        log_evaluation(run, config, work.reports, cv, export=work.exported_model(FIT_RUN))
    return {"metrics": metrics, "cv": cv, "threshold": predictor.threshold}


def cross_validation_summary(config: JobConfig) -> dict[str, float]:
    """Mean and spread of the folds' best validation AUC, when the cv stage ran."""
    work = WorkDir(config.work_dir)
    selections = [work.selection(fold_run_name(fold)) for fold in range(config.split.folds)]
    aucs = [json.loads(path.read_text())["val_auc"] for path in selections if path.is_file()]
    aucs = [a for a in aucs if _finite(a)]
    if not aucs:
        return {}
    return {"cv/mean_auc": float(np.mean(aucs)), "cv/std_auc": float(np.std(aucs)), "cv/folds": float(len(aucs))}


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def outputs_verify(config: JobConfig, previous: JobConfig | None) -> bool:
    """The report and predictions are newer than the exported model; ``evaluate`` is unchanged."""
    work = WorkDir(config.work_dir)
    model = work.exported_model(FIT_RUN)
    return newer(work.report, model) and newer(work.predictions, model) and same_sections(
        config, previous, "data", "evaluate")


STEPS = (Step("evaluate", "evaluate", run_evaluate, outputs_verify=outputs_verify),)
