"""Run identity, source tags, metric selection, links and the pinned view: the pure parts of issue 13."""

import json
import math
import subprocess

import pytest

from idhhpc.stages.cv import fold_run_name
from idhhpc.stages.fit import RUN_NAME as FIT_RUN
from idhhpc.tracking.identity import ROLES, run_params, split_hash, training_identity
from idhhpc.tracking.links import compare_url, run_url, runs_url, ui_base, ui_command
from idhhpc.tracking.metrics import (
    cam_group_rows,
    cam_metrics,
    epoch_metrics,
    evaluation_metrics,
    hidden_chart_metrics,
    launch_metrics,
)
from idhhpc.tracking.tags import ENTRY_POINTS, module_file, source_tags
from idhhpc.tracking.views import (
    SHARED_VIEW_TAG,
    decode_state,
    same_view,
    shared_view_value,
    view_state,
)
from idhhpc.tune.runs import trial_params


def test_training_identity_agrees_with_the_stage_run_names():
    assert training_identity(fold_run_name(3)) == {"role": "cv", "fold": 3}
    assert training_identity(FIT_RUN) == {"role": "fit"}
    with pytest.raises(ValueError, match="neither 'fit' nor 'fold-<k>'"):
        training_identity("fold-x")


def test_split_hash_names_the_patients_not_their_order():
    assert split_hash(train=["b", "a"], val=["c"]) == split_hash(train=["a", "b"], val=["c"])
    assert split_hash(train=["a", "b"], val=["c"]) != split_hash(train=["a", "c"], val=["b"])
    assert run_params("cv", 1, train=["a"], val=["b"]) == {"role": "cv", "fold": "1",
                                                           "split_hash": split_hash(train=["a"], val=["b"])}
    assert trial_params({"max_lr": 0.01})["role"] == "trial"
    assert set(ENTRY_POINTS) == set(ROLES)


def test_source_tags_point_at_existing_entry_point_files_and_the_checkout_commit(monkeypatch):
    for name in ("IDHHPC_GIT_COMMIT", "IDHHPC_GIT_BRANCH", "IDHHPC_GIT_DIRTY", "IDHHPC_GIT_REPO"):
        monkeypatch.delenv(name, raising=False)
    assert all(module_file(module).is_file() for module in ENTRY_POINTS.values())
    head = subprocess.run(["git", "-C", str(module_file("idhhpc.launch").parent), "rev-parse", "HEAD"],
                          capture_output=True, text=True).stdout.strip()
    tags = source_tags("evaluate")
    assert tags["mlflow.source.name"].endswith("idhhpc/stages/evaluate.py")
    assert tags["idhhpc.entry_point"] == "idhhpc.stages.evaluate"
    assert tags.get("mlflow.source.git.commit", "") == head
    monkeypatch.setenv("IDHHPC_GIT_COMMIT", "f" * 40)  # what the launcher pins for its jobs
    assert source_tags("cv")["mlflow.source.git.commit"] == "f" * 40


def test_test_metrics_are_the_headline_with_ci_and_leave_undefined_values_out():
    document = {"metrics": {"auc": 0.8, "f1_weighted": 0.7, "accuracy": 0.75, "mcc": None, "brier": 0.2,
                            "precision_mutant": 0.5},
                "confidence_intervals": {"auc": [0.6, 0.9], "f1_weighted": [None, None], "accuracy": [0.5, 0.9]}}
    metrics = evaluation_metrics(document)
    assert metrics["test/auc_ci_low"] == 0.6 and metrics["test/auc_ci_high"] == 0.9
    assert "test/mcc" not in metrics and "test/f1_weighted_ci_low" not in metrics
    assert "test/precision_mutant" not in metrics  # in the table artifact, not a chart
    assert set(hidden_chart_metrics()) >= {"test/auc_ci_low", "test/accuracy_ci_high"}


def test_cam_metrics_keep_the_all_patients_group_and_the_table_holds_the_groups():
    summary = {"cam/n_cases": 4.0, "cam/energy_in_tumor": 0.3, "cam/energy_in_tumor_mutant": 0.4,
               "cam/n_cases_mutant": 2.0, "cam/pointing_game_wrong": math.nan}
    assert cam_metrics(summary) == {"cam/n_cases": 4.0, "cam/energy_in_tumor": 0.3}
    rows = {row["group"]: row for row in cam_group_rows(summary)}
    assert rows["mutant"]["energy_in_tumor"] == 0.4 and rows["mutant"]["n_cases"] == 2.0
    assert rows["wrong"]["pointing_game"] is None
    assert launch_metrics({"cam/energy_in_tumor": 0.3, "cam/n_cases": 4.0, "test/auc": 0.8, "cv/oof_auc": 0.7}) == {
        "cam/energy_in_tumor": 0.3, "test/auc": 0.8, "cv/oof_auc": 0.7}


def test_epoch_metrics_drop_counters_keep_nan_and_start_with_val_auc():
    record = {"epoch": 2, "train/loss": 0.5, "val/loss": 0.6, "val/auc": math.nan, "lr": 1e-4, "optimizer_step": 30}
    metrics = epoch_metrics(record)
    assert list(metrics)[0] == "val/auc" and math.isnan(metrics["val/auc"])
    assert set(metrics) == {"val/auc", "train/loss", "val/loss", "lr"}


def test_links_open_the_model_training_views():
    assert ui_base("http://10.0.0.5:5000/") == "http://10.0.0.5:5000"
    assert ui_base("sqlite:////w/mlflow.db") == "http://127.0.0.1:5000"
    assert ui_command("sqlite:////w/mlflow.db") == "mlflow ui --backend-store-uri sqlite:////w/mlflow.db " \
                                                   "--host 127.0.0.1 --port 5000"
    assert ui_command("http://10.0.0.5:5000") is None
    base = "http://h:1"
    assert runs_url(base, "3") == \
        "http://h:1/#/experiments/3/runs?workflowType=machine_learning&viewStateShareKey=idhhpc"
    assert run_url(base, "3", "abc", "artifacts/report.html") == \
        "http://h:1/#/experiments/3/runs/abc/artifacts/report.html?workflowType=machine_learning"
    assert compare_url(base, "3", ["a", "b"]) == ("http://h:1/#/compare-runs?runs=%5B%22a%22%2C%20%22b%22%5D"
                                                 "&experiments=%5B%223%22%5D&workflowType=machine_learning")


def test_pinned_view_round_trips_and_is_recognised_whatever_its_timestamps():
    state = view_state(("test/auc_ci_low",))
    value = shared_view_value(state, 1)
    assert SHARED_VIEW_TAG == "mlflow.sharedViewState.idhhpc"
    assert same_view(value, state) and same_view(shared_view_value(state, 2), state)
    assert not same_view(value, view_state()) and not same_view("not json", state) and not same_view(None, state)
    decoded = decode_state(json.loads(value)["state"])
    cards = {card["metricKey"]: card for card in decoded["compareRunCharts"]}
    assert cards["val/auc"]["type"] == "LINE" and cards["test/auc"]["type"] == "BAR"
    assert cards["test/auc_ci_low"]["deleted"] is True
