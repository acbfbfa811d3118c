"""What a launch leaves in a real ``mlflow server``, read back with the MLflow client (issue 13).

The experiment is marked as model training and linked into the runs view; runs differ by
params; the launch run carries the headline metrics; metric sets are small; every run names
its code and spans its work; datasets are logged; the final model is a registered pyfunc
that ``mlflow models predict`` and ``python -m idhhpc.predict --model`` both serve.
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import mlflow
from idhhpc.atomic import sha256_file
from idhhpc.data.dataset import read_case
from idhhpc.data.splits import load_splits
from idhhpc.constants import PATIENT_ROOTS_VARIABLE
from idhhpc.predict import PREDICTION_FILE
from idhhpc.predict import main as predict_main
from idhhpc.predictor import read_export
from idhhpc.stages.cv import fold_run_name
from idhhpc.tracking.experiment import EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND
from idhhpc.tracking.links import WORKFLOW_QUERY
from idhhpc.tracking.model import registered_name
from idhhpc.tracking.views import SHARED_VIEW_TAG, VIEW_NAME, decode_state
from idhhpc.workdir import WorkDir

pytestmark = [pytest.mark.mlflow, pytest.mark.slow]

MAX_METRIC_KEYS = 30
STAGE_RUNS = ("fold-0", "fold-1", "cv-summary", "fit", "evaluate", "explain")


def _ms(path: Path) -> int:
    return path.stat().st_mtime_ns // 1_000_000


def test_experiment_is_marked_as_model_training_and_every_printed_link_opens_that_view(tracked_launch):
    tags = tracked_launch["experiment"].tags
    assert tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING_KIND
    view = json.loads(tags[SHARED_VIEW_TAG])
    assert view["name"] == VIEW_NAME
    assert "metrics.`test/auc`" in decode_state(view["state"])["selectedColumns"]
    printed = tracked_launch["printed"]
    links = re.findall(r"http://\S+/#/\S+", printed)
    assert len(links) >= 4 and all(WORKFLOW_QUERY in link for link in links)
    assert re.search(r"runs: +http://\S+/#/experiments/\d+/runs\?", printed)
    assert "compare folds:" in printed
    assert "View run" not in printed  # MLflow's own links (GenAI view) are silenced


def test_fold_runs_differ_in_fold_and_split_only(tracked_launch):
    runs = tracked_launch["runs"]
    folds = [runs[fold_run_name(k)].data.params for k in (0, 1)]
    assert [p["fold"] for p in folds] == ["0", "1"] and {p["role"] for p in folds} == {"cv"}
    differing = {key for key in folds[0].keys() | folds[1].keys() if folds[0].get(key) != folds[1].get(key)}
    assert differing == {"fold", "split_hash"}
    roles = {name: runs[name].data.params["role"] for name in ("tiny", "fit", "evaluate", "explain")}
    assert roles == {"tiny": "launch", "fit": "fit", "evaluate": "evaluate", "explain": "explain"}


def test_launch_run_holds_the_headline_metrics_and_the_final_fit_curves(tracked_launch):
    client, runs = tracked_launch["client"], tracked_launch["runs"]
    parent, evaluate = runs["tiny"].data.metrics, runs["evaluate"].data.metrics
    for key in ("test/auc", "test/auc_ci_low", "test/auc_ci_high", "test/f1_weighted", "test/accuracy",
                "cv/mean_auc"):
        assert parent[key] == pytest.approx(evaluate[key])
    assert parent["test/auc_ci_low"] <= parent["test/auc"] <= parent["test/auc_ci_high"]
    assert {k for k in evaluate if k.startswith("cv/")} <= set(parent)  # cv/oof_auc too, once the cv stage logs it
    assert "cam/energy_in_tumor" in parent
    for key in ("train/loss", "val/auc"):
        fit_curve = client.get_metric_history(runs["fit"].info.run_id, key)
        launch_curve = client.get_metric_history(runs["tiny"].info.run_id, key)
        assert [m.step for m in launch_curve] == [m.step for m in fit_curve] == [0, 1]
        assert [m.value for m in launch_curve] == pytest.approx([m.value for m in fit_curve], nan_ok=True)


def test_no_run_has_more_than_about_30_metric_keys(tracked_launch):
    counts = {name: len(run.data.metrics) for name, run in tracked_launch["runs"].items()}
    assert max(counts.values()) <= MAX_METRIC_KEYS, counts
    explain = tracked_launch["runs"]["explain"]
    assert not [k for k in explain.data.metrics if k.endswith(("_mutant", "_wildtype", "_correct", "_wrong"))]
    table = json.loads(Path(tracked_launch["client"].download_artifacts(explain.info.run_id, "cam_groups.json"))
                       .read_text())
    assert [row[0] for row in table["data"]] == ["all", "wildtype", "mutant", "correct", "wrong"]
    assert {"path": "cam_groups.json", "type": "table"} in json.loads(explain.data.tags["mlflow.loggedArtifacts"])


def test_every_run_names_its_commit_and_entry_point(tracked_launch):
    expected_files = {"tiny": "launch.py", "fold-0": "cv.py", "fold-1": "cv.py", "cv-summary": "cv.py", "fit": "fit.py",
                      "evaluate": "evaluate.py", "explain": "explain.py"}
    for name, run in tracked_launch["runs"].items():
        tags = run.data.tags
        assert tags["mlflow.source.git.commit"] == tracked_launch["commit"], name
        source = Path(tags["mlflow.source.name"])
        assert source.is_file() and source.name == expected_files[name]
        assert tags["idhhpc.entry_point"].startswith("idhhpc.") and tags["mlflow.user"]


def test_every_run_spans_its_work(tracked_launch):
    runs, work = tracked_launch["runs"], WorkDir(tracked_launch["work"])
    outputs = {"evaluate": [work.reports / "metrics.json", work.reports / "report.html"],
               "explain": [work.explanations / "cam_statistics.json"], "fit": [work.exported_model("fit")],
               **{f"fold-{k}": [work.selection(f"fold-{k}"), work.exported_model(f"fold-{k}")] for k in (0, 1)}}
    for name, paths in outputs.items():
        info = runs[name].info
        assert info.status == "FINISHED"
        for path in paths:
            assert info.start_time <= _ms(path) <= info.end_time, (name, path.name)
    launch = runs["tiny"].info
    assert launch.start_time <= min(runs[n].info.start_time for n in STAGE_RUNS)
    assert launch.end_time >= max(runs[n].info.end_time for n in STAGE_RUNS)


def test_cohort_is_logged_as_datasets_with_the_manifest_digest_and_the_split(tracked_launch):
    runs, config = tracked_launch["runs"], tracked_launch["config"]
    manifest_digest = sha256_file(WorkDir(tracked_launch["work"]).manifest)[:8]
    splits = load_splits(config)
    inputs = {name: {i.tags[0].value: i.dataset for i in runs[name].inputs.dataset_inputs}
              for name in ("fold-0", "fold-1", "evaluate")}
    assert set(inputs["fold-0"]) == {"training", "validation"} and set(inputs["evaluate"]) == {"test"}
    datasets = [d for by_context in inputs.values() for d in by_context.values()]
    assert all(d.digest.startswith(manifest_digest + "-") for d in datasets)
    assert inputs["fold-0"]["training"].digest != inputs["fold-1"]["training"].digest
    assert json.loads(inputs["fold-1"]["validation"].profile)["num_rows"] == len(splits["folds"][1]["val"])
    assert json.loads(inputs["evaluate"]["test"].profile)["num_rows"] == len(splits["test"])


def test_figures_and_reports_sit_at_the_run_roots_where_compare_finds_them(tracked_launch):
    client, runs = tracked_launch["client"], tracked_launch["runs"]
    root = {name: {a.path for a in client.list_artifacts(run.info.run_id)} for name, run in runs.items()}
    assert {"report.html", "roc.png", "metrics_table.json", "report.md", "predictions.csv"} <= root["evaluate"]
    assert {"history.png", "selection.json"} <= root["fold-0"] & root["fold-1"] & root["fit"]
    assert {"report.html", "roc.png"} <= root["tiny"]
    assert {"gallery.html", "cam_statistics.json"} <= root["explain"]
    assert runs["evaluate"].data.tags.get("mlflow.loggedImages") == "True"


@pytest.fixture(scope="module")
def served(tracked_launch, tmp_path_factory):
    """The registered model and a test patient, with the probability the evaluate stage gave it."""
    work = WorkDir(tracked_launch["work"])
    with open(work.predictions) as fh:
        evaluated = {row["patient_id"]: float(row["prob_mutant"]) for row in csv.DictReader(fh)}
    patient = load_splits(tracked_launch["config"])["test"][0]
    name = registered_name(tracked_launch["config"])
    return {"uri": f"models:/{name}/1", "name": name, "patient": patient, "evaluated": evaluated[patient],
            "folder": tracked_launch["cohort"] / f"{patient}_nifti", "export": work.exported_model("fit"),
            "url": tracked_launch["server"].url, "index": work.index, "tmp": tmp_path_factory.mktemp("served")}


def _cli_probability(served, *source: str) -> dict:
    out = served["tmp"] / "-".join(s.replace("/", "_").replace(":", "") for s in source)
    assert predict_main([*source, "--patient", str(served["folder"]), "--out", str(out), "--device", "cpu"]) == 0
    return json.loads((out / PREDICTION_FILE).read_text())


def test_final_model_is_registered_with_signature_threshold_and_calibration(tracked_launch, served, monkeypatch):
    version = tracked_launch["client"].get_model_version(served["name"], "1")
    assert version.run_id == tracked_launch["runs"]["evaluate"].info.run_id
    assert tracked_launch["runs"]["evaluate"].data.tags["idhhpc.registered_model"] == served["uri"]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", served["url"])
    model = mlflow.pyfunc.load_model(served["uri"])
    metadata = model.metadata.metadata
    assert metadata["threshold"] == pytest.approx(read_export(served["export"])["threshold"])
    assert metadata["calibration"] == {"method": tracked_launch["config"].evaluate.calibration,
                                       "temperature": pytest.approx(read_export(served["export"])["temperature"])}
    assert metadata["variant"] == "b0"
    assert model.metadata.get_input_schema().input_names() == ["patient_dir", "image"]
    assert model.metadata.get_output_schema().input_names() == ["prob_mutant", "label"]
    image = read_case(served["index"], served["patient"]).image.astype("float64")
    answer = model.predict(pd.DataFrame({"image": [image.tolist()]}))
    assert answer["prob_mutant"][0] == pytest.approx(served["evaluated"], abs=1e-5)


def test_mlflow_models_predict_matches_the_predict_command(served):
    request = served["tmp"] / "request.json"
    request.write_text(json.dumps({"dataframe_split": {"columns": ["patient_dir"], "data": [[str(served["folder"])]]}}))
    answer = served["tmp"] / "answer.json"
    env = {**os.environ, "MLFLOW_TRACKING_URI": served["url"], "OMP_NUM_THREADS": "1",
           PATIENT_ROOTS_VARIABLE: str(served["folder"].parent)}
    subprocess.run([sys.executable, "-m", "mlflow", "models", "predict", "-m", served["uri"], "-i", str(request),
                    "-t", "json", "-o", str(answer), "--env-manager", "local"], env=env, check=True,
                   capture_output=True, timeout=600)
    [row] = json.loads(answer.read_text())["predictions"]
    expected = _cli_probability(served, "--checkpoint", str(served["export"]))
    assert row["prob_mutant"] == pytest.approx(expected["prob_mutant"], abs=1e-5)
    assert row["prob_mutant"] == pytest.approx(served["evaluated"], abs=1e-5)
    assert row["label"] == expected["predicted_class"]


def test_predict_command_loads_the_registered_model(served):
    from_registry = _cli_probability(served, "--model", served["uri"], "--tracking-uri", served["url"])
    from_file = _cli_probability(served, "--checkpoint", str(served["export"]))
    assert from_registry["prob_mutant"] == pytest.approx(from_file["prob_mutant"], abs=1e-6)
    assert from_registry["checkpoint"] == served["uri"]
    assert predict_main(["--model", f"models:/{served['name']}/99", "--tracking-uri", served["url"],
                         "--patient", str(served["folder"]), "--out", str(served["tmp"] / "none")]) == 2
    assert not (served["tmp"] / "none").exists()
