"""What issue 9 promises of a run: out-of-fold predictions, the fold ensemble, calibration, and
the network beside the classical baseline and the Bayes optimum on the same patients."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
from scipy.special import expit, logit
from sklearn.metrics import roc_auc_score

import mlflow
from idhhpc.data.clinical import read_covariates
from idhhpc.data.dataset import ShardDataset
from idhhpc.data.oracle import load_oracle
from idhhpc.data.splits import load_splits, non_test_patients
from idhhpc.evaluate.calibration import apply_temperature, negative_log_likelihood
from idhhpc.predictor import Predictor
from idhhpc.stages.cv import run_cv_summary
from idhhpc.stages.evaluate import run_evaluate, score_models
from idhhpc.tracking.runs import tracking_uri
from idhhpc.workdir import WorkDir
from tests.support.jobs import tiny_config
from tests.support.pipeline import run_in_process

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    root = tmp_path_factory.mktemp("learning")
    config = tiny_config(root / "work", root / "cohort", "train.device=cpu", "train.epochs=2")
    run_in_process(config, ["cohort", "preprocess", "split", "cv", "fit", "evaluate"])
    return config


def _oof_rows(config):
    with open(WorkDir(config.work_dir).oof_predictions) as fh:
        return list(csv.DictReader(fh))


def test_out_of_fold_predictions_cover_every_non_test_patient_once(job):
    rows, splits = _oof_rows(job), load_splits(job)
    ids = [row["patient_id"] for row in rows]
    assert sorted(ids) == non_test_patients(splits) and len(set(ids)) == len(ids)
    assert not set(ids) & set(splits["test"])
    for row in rows:
        assert row["patient_id"] in splits["folds"][int(row["fold"])]["val"]
        assert int(row["label"]) == splits["labels"][row["patient_id"]]


def test_pooled_auc_and_oracle_are_computed_on_those_patients(job):
    rows = _oof_rows(job)
    summary = json.loads(WorkDir(job.work_dir).cv_summary.read_text())
    labels = [int(r["label"]) for r in rows]
    assert summary["network"]["auc"] == pytest.approx(roc_auc_score(labels, [float(r["prob_mutant"]) for r in rows]),
                                                      abs=1e-5)
    assert summary["network"]["low"] <= summary["network"]["auc"] <= summary["network"]["high"]
    oracle = load_oracle(job)
    assert summary["oracle"]["auc"] == pytest.approx(roc_auc_score(labels, [oracle[r["patient_id"]] for r in rows]))
    assert summary["baseline"] is not None and 0.0 <= summary["baseline"]["auc"] <= 1.0


def test_calibration_lowers_the_validation_negative_log_likelihood(job):
    for run in ("fold-0", "fold-1", "fit"):
        selection = json.loads(WorkDir(job.work_dir).selection(run).read_text())
        val = selection["val"]
        assert selection["val_nll"]["calibrated"] <= selection["val_nll"]["raw"] + 1e-9
        assert negative_log_likelihood(val["labels"], val["probs"]) == pytest.approx(selection["val_nll"]["calibrated"])
        assert val["probs"] == pytest.approx(apply_temperature(val["probs_raw"], selection["temperature"]).tolist())


def test_exported_model_applies_its_temperature(job):
    work = WorkDir(job.work_dir)
    predictor = Predictor.load(work.exported_model("fit"), "cpu")
    test = ShardDataset(work.index, load_splits(job)["test"])
    raw = Predictor(predictor.model, predictor.device, predictor.config, 0.5, "f1", 0.0, "raw").predict_proba(test)
    assert predictor.predict_proba(test) == pytest.approx(apply_temperature(raw, predictor.temperature), abs=1e-5)


def test_fold_ensemble_is_the_logit_mean_of_the_fold_models_and_reproducible(job):
    work = WorkDir(job.work_dir)
    test = ShardDataset(work.index, load_splits(job)["test"])
    first, again = score_models(job, test), score_models(job, test)
    predictors = [Predictor.load(work.exported_model(f"fold-{f}"), "cpu") for f in range(2)]
    logits = [logit(np.clip(p.predict_proba(test), 1e-7, 1 - 1e-7)) for p in predictors]
    assert np.array_equal(first["folds"].probs, again["folds"].probs)
    assert first["folds"].probs == pytest.approx(expit(np.mean(logits, axis=0)), abs=1e-6)
    assert first["folds"].threshold == pytest.approx(expit(np.mean([logit(p.threshold) for p in predictors])))
    with open(work.predictions) as fh:  # the headline (default: folds) is what the report scored
        reported = [float(row["prob_mutant"]) for row in csv.DictReader(fh)]
    assert reported == pytest.approx(first["folds"].probs.tolist(), abs=1e-6)


def test_report_shows_both_models_the_baseline_the_optimum_and_the_weights(job):
    report = WorkDir(job.work_dir).report.read_text()
    for phrase in ("mean of the 2 fold models", "final fit", "classical baseline", "Bayes-optimal score",
                   "## Out-of-fold (cross-validation)", "## Calibration", "random initial weights", "reliability.png"):
        assert phrase in report


@pytest.fixture(scope="module")
def with_age(job, tmp_path_factory):
    """The same trained job, summarised and evaluated again with ``evaluate.clinical=[age]``."""
    root = tmp_path_factory.mktemp("with-age")
    shutil.copytree(job.work_dir, root / "work")
    config = tiny_config(root / "work", job.data.root, "train.device=cpu", "train.epochs=2", "evaluate.clinical=[age]")
    run_cv_summary(config)
    run_evaluate(config)
    return config


def test_clinical_fusion_is_reported_beside_the_imaging_figures_which_stay_the_headline(job, with_age):
    imaging, work = WorkDir(job.work_dir), WorkDir(with_age.work_dir)
    summary = json.loads(work.cv_summary.read_text())
    assert summary["network"] == json.loads(imaging.cv_summary.read_text())["network"]  # imaging-only, unchanged
    assert summary["clinical_inputs"] == ["age"]
    assert 0.0 <= summary["with_clinical"]["auc"] <= 1.0 and 0.0 <= summary["clinical_only"]["auc"] <= 1.0
    assert work.predictions.read_text() == imaging.predictions.read_text()
    report = work.report.read_text()
    assert "network + age (headline model fused" in report and "age alone (logistic regression" in report
    assert not imaging.clinical_fusion.exists() and "age alone" not in imaging.report.read_text()


def test_the_fused_test_scores_follow_from_the_written_stacker(with_age):
    work = WorkDir(with_age.work_dir)
    written = json.loads(work.clinical_fusion.read_text())
    test_ids = load_splits(with_age)["test"]
    assert written["test"]["patient_ids"] == test_ids and written["n"] == len(non_test_patients(load_splits(with_age)))
    headline = score_models(with_age, ShardDataset(work.index, test_ids))["folds"].probs  # the default headline
    ages = read_covariates(with_age, test_ids)[:, 0]
    fused = written["fused"]
    x = np.column_stack([np.log(np.clip(headline, 1e-6, 1 - 1e-6) / (1 - np.clip(headline, 1e-6, 1 - 1e-6))), ages])
    logit = fused["intercept"] + ((x - fused["mean"]) / fused["scale"]) @ np.array(fused["coefficients"])
    assert written["test"]["network + age"] == pytest.approx((1 / (1 + np.exp(-logit))).tolist(), abs=1e-4)


def test_the_evaluate_run_in_mlflow_holds_the_fused_metrics_and_the_stacker(with_age):
    client = mlflow.MlflowClient(tracking_uri(with_age))
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    latest = max((r for r in runs if r.info.run_name == "evaluate"), key=lambda r: r.info.start_time)
    assert {"test/auc_with_clinical", "test/clinical_only_auc", "cv/oof_auc_with_clinical"} <= set(latest.data.metrics)
    assert "clinical_fusion.json" in {a.path for a in client.list_artifacts(latest.info.run_id)}
