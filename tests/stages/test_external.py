"""The external step on the local executor: a finished launch scores a site-B cohort in the EGD
layout without retraining, excludes a planted training patient, and reports like the internal test."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from idhhpc.evaluate.calibration import calibration_slope_intercept
from idhhpc.launch import main
from idhhpc.phantoms.cli import main as phantoms_main
from tests.support.jobs import tiny_overrides

TRAIN_STAGES = "cohort,preprocess,split,fit,evaluate"


def _sets(overrides: list[str]) -> list[str]:
    return [arg for override in overrides for arg in ("--set", override)]


@pytest.fixture(scope="module")
def launched(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("external")
    work, cohort, site_b = root / "work", root / "cohort", root / "siteB"
    overrides = tiny_overrides(work, cohort, "preprocess.shard_size=16")  # one external array task
    assert main(["--executor", "debug", "-q", "--stages", TRAIN_STAGES, *_sets(overrides)]) == 0
    assert phantoms_main([str(site_b), "--site", "B", "--patients", "8", "--seed", "0", "--shape", "48", "48", "32",
                          "--unknown", "1", "--plant-duplicates-from", str(cohort), "--duplicates", "1"]) == 0
    models = {p: p.stat().st_mtime_ns for p in (work / "checkpoints").glob("*/model.pt")}
    external = f"external=[{{name: siteb, layout: egd, root: {site_b}, harmonise: histogram}}]"
    code = main(["--executor", "local", "-q", "--stages", "external", *_sets(overrides), "--set", external])
    return {"code": code, "work": work, "models": models, "planted": json.loads(
        (site_b / "planted_duplicates.json").read_text())}


def _predictions(work, name) -> list[dict[str, str]]:
    with open(work / "external" / name / "reports" / "predictions.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_external_scores_without_retraining_and_lists_every_patient(launched):
    assert launched["code"] == 0
    assert {p: p.stat().st_mtime_ns for p in launched["models"]} == launched["models"]
    rows = {row["patient_id"]: row for row in _predictions(launched["work"], "siteb")}
    scored = [row for row in rows.values() if row["status"] == "scored"]
    assert len(scored) == 8 and all(0.0 <= float(row["prob_mutant"]) <= 1.0 for row in scored)
    assert all(row["manufacturer"] for row in scored)
    (planted, source), = launched["planted"].items()
    assert rows[planted]["status"] == "quarantined" and f"internal patient {source}" in rows[planted]["reason"]
    unknown = [row for row in rows.values() if "unlabeled IDH" in row["reason"]]
    assert len(unknown) == 1 and unknown[0]["prob_mutant"] == ""


def test_external_report_sets_internal_beside_external(launched):
    reports = launched["work"] / "external" / "siteb" / "reports"
    report = (reports / "report.md").read_text()
    for heading in ("external cohort siteb", "## Internal and external", "## External calibration",
                    "## Leakage guard", "## Quarantined (2)", "reliability.png"):
        assert heading in report
    summary = json.loads((reports / "external.json").read_text())
    internal = json.loads((launched["work"] / "reports" / "metrics.json").read_text())
    assert summary["internal_auc"] == pytest.approx(internal["metrics"]["auc"])
    assert summary["threshold"] == pytest.approx(internal["threshold"])  # transported unchanged
    assert summary["duplicates"] == 1 and summary["n"] == 8
    assert summary["harmonise"] == "histogram" and 0.0 <= summary["unharmonised_auc"] <= 1.0
    assert "not harmonised" in report


def test_external_metrics_are_on_the_launch_run(launched):
    work = launched["work"]
    client = MlflowClient(f"sqlite:///{work.resolve() / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("idhhpc").experiment_id
    launch = client.search_runs([experiment], filter_string="tags.`idhhpc.kind` = 'launch'",
                                order_by=["attributes.start_time DESC"])[0]
    metrics = launch.data.metrics
    for key in ("auc", "auc_ci_low", "auc_ci_high", "f1_weighted", "accuracy", "brier", "ece", "duplicates", "n"):
        assert f"external/siteb/{key}" in metrics, key
    assert metrics["external/siteb/duplicates"] == 1.0
    assert "external/siteb/unharmonised_auc" in metrics


def test_calibration_slope_is_one_for_calibrated_probabilities():
    rng = np.random.default_rng(0)
    probs = rng.uniform(0.02, 0.98, 4000)
    labels = (rng.uniform(size=probs.size) < probs).astype(int)
    slope, intercept = calibration_slope_intercept(labels, probs)
    assert slope == pytest.approx(1.0, abs=0.15) and intercept == pytest.approx(0.0, abs=0.15)
    over, _ = calibration_slope_intercept(labels, 1 / (1 + np.exp(-3 * np.log(probs / (1 - probs)))))
    assert over < 0.5  # over-confident probabilities have a slope below one


@pytest.mark.parametrize("head", ["classify", "segment+classify"])
def test_dice_is_reported_only_where_the_model_segments(tmp_path, head):
    import torch

    from idhhpc.config import load_job
    from idhhpc.evaluate.external import segmentation_dice
    from idhhpc.model.network import build_network
    from idhhpc.predictor import Predictor

    config = load_job(None, [f"work_dir={tmp_path}", "preprocess.size=32", f"model.head={head}"])
    predictor = Predictor(build_network(config).eval(), torch.device("cpu"), config, 0.5, "f1", 0.5, "fit")
    rng = np.random.default_rng(0)
    tumor = np.zeros((32, 32, 32), np.uint8)
    tumor[10:20, 10:20, 10:20] = 2
    cases = [(rng.normal(size=(4, 32, 32, 32)).astype(np.float32), tumor), (np.zeros((4, 32, 32, 32), np.float32), None)]
    dice = segmentation_dice(predictor, cases)
    if head == "classify":
        assert dice == {}
    else:
        assert dice["n"] == 1 and 0.0 <= dice["tumor"] <= 1.0
