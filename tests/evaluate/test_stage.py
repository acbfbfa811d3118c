import csv
import json

import numpy as np
import pytest

from idhhpc.evaluate import STUDY_REFERENCE, evaluate_predictions
from idhhpc.ids import UnsafePatientId

HISTORY = [{"epoch": e, "train/loss": 1 / (e + 1), "val/loss": 1.1 / (e + 1), "val/auc": 0.6 + 0.05 * e, "lr": 1e-4}
           for e in range(3)]  # fmt: skip


def _cohort(n_wildtype: int = 30, n_mutant: int = 10):
    rng = np.random.default_rng(0)
    y_true = np.r_[np.zeros(n_wildtype, int), np.ones(n_mutant, int)]
    prob = np.clip(rng.normal(0.3 + 0.4 * y_true, 0.2), 0, 1)
    ids = [f"UCSF-PDGM-{i:04d}" for i in range(len(y_true))]
    return y_true, prob, ids


def _strict_json(path):
    def reject(constant):
        raise ValueError(f"non-standard JSON constant {constant}")

    return json.loads(path.read_text(), parse_constant=reject)


def test_writes_every_artefact(tmp_path):
    y_true, prob, ids = _cohort()
    metrics = evaluate_predictions(y_true, prob, 0.5, ids, tmp_path, history=HISTORY, n_resamples=100)
    expected = {"metrics.json", "predictions.csv", "report.md", "report.html", "roc.png", "precision_recall.png",
                "confusion_matrix.png", "per_class_metrics.png", "history.png", "reliability.png"}  # fmt: skip
    assert {path.name for path in tmp_path.iterdir()} == expected

    document = _strict_json(tmp_path / "metrics.json")
    assert document["n"] == 40 and document["class_counts"] == {"wildtype": 30, "mutant": 10}
    assert document["threshold"] == 0.5
    assert document["metrics"]["auc"] == pytest.approx(metrics["auc"])
    low, high = document["confidence_intervals"]["auc"]
    assert low <= metrics["auc"] <= high

    rows = list(csv.DictReader((tmp_path / "predictions.csv").read_text().splitlines()))
    assert [row["patient_id"] for row in rows] == ids
    assert {row["predicted"] for row in rows} <= {"0", "1"}
    assert sum(int(row["label"]) for row in rows) == 10


def test_report_compares_with_the_study(tmp_path):
    y_true, prob, ids = _cohort()
    evaluate_predictions(y_true, prob, 0.5, ids, tmp_path, n_resamples=50)
    report = (tmp_path / "report.md").read_text()
    assert "beats reference" in report
    for key, value in STUDY_REFERENCE.items():
        assert f"| {key} |" in report and f"{value:.3f}" in report
    assert "![ROC curve](roc.png)" in report
    assert "history.png" not in report  # no history given, no training curves


def test_one_class_test_set_still_writes_a_report(tmp_path):
    _, prob, ids = _cohort()
    with pytest.warns(RuntimeWarning):
        metrics = evaluate_predictions(np.zeros(40, int), prob, 0.5, ids, tmp_path, n_resamples=20)
    assert np.isnan(metrics["auc"])
    assert _strict_json(tmp_path / "metrics.json")["metrics"]["auc"] is None
    assert "n/a" in (tmp_path / "report.md").read_text()
    assert not (tmp_path / "roc.png").exists()


def test_rejects_unsafe_or_mismatched_patient_ids(tmp_path):
    y_true, prob, ids = _cohort()
    with pytest.raises(UnsafePatientId):
        evaluate_predictions(y_true, prob, 0.5, ["../escape", *ids[1:]], tmp_path, n_resamples=10)
    with pytest.raises(ValueError, match="patient_ids"):
        evaluate_predictions(y_true, prob, 0.5, ids[:-1], tmp_path, n_resamples=10)
    with pytest.raises(ValueError, match="duplicates"):
        evaluate_predictions(y_true, prob, 0.5, [ids[0], *ids[:-1]], tmp_path, n_resamples=10)
    assert not any(tmp_path.iterdir())
