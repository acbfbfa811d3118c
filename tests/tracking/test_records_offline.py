"""Tables, keyed images and dataset inputs go through the spool like every other record.

Logged while the server is down, they reach it once it answers, each exactly once: a table
resent is not appended to itself (as ``mlflow.log_table`` would), a dataset is linked once.
"""

import json
import logging

import pytest
from matplotlib.figure import Figure
from mlflow.tracking import MlflowClient

from idhhpc.tracking import Tracker
from idhhpc.tracking.datasets import cohort_datasets
from tests.support.jobs import tiny_config
from tests.support.mlflow_server import MlflowServer, free_port

pytestmark = pytest.mark.mlflow

MANIFEST = "patient_id,label,flair\nUCSF-PDGM-0001,1,a.nii.gz\nUCSF-PDGM-0002,0,b.nii.gz\nUCSF-PDGM-0003,0,c.nii.gz\n"


def _figure(path):
    figure = Figure(figsize=(2, 2))
    figure.subplots().plot([0, 1], [0, 1])
    figure.savefig(path)
    return path


def test_tables_images_and_datasets_logged_offline_arrive_once(tmp_path, caplog):
    config = tiny_config(tmp_path / "work", tmp_path / "cohort")
    (tmp_path / "work" / "cohort").mkdir(parents=True)
    (tmp_path / "work" / "cohort" / "manifest.csv").write_text(MANIFEST)
    port = free_port()
    tracker = Tracker(f"http://127.0.0.1:{port}", "offline-records", tmp_path / "spool")
    with caplog.at_level(logging.WARNING, logger="idhhpc.tracking"):
        run = tracker.start_run("evaluate")
        run.log_table([{"metric": "auc", "value": 0.8}, {"metric": "mcc", "value": None}], "metrics_table.json")
        run.log_image(_figure(tmp_path / "roc.png"), key="roc")
        run.log_inputs(cohort_datasets(config, {"train": ["UCSF-PDGM-0001", "UCSF-PDGM-0002"],
                                                "test": ["UCSF-PDGM-0003"]}))
        run.end()
    assert tracker.pending() == 5 and run.known_run_id() is None
    (tmp_path / "roc.png").unlink()  # the spool kept its own copy

    server = MlflowServer(tmp_path / "mlflow", port).start()
    try:
        assert tracker.flush()
        client = MlflowClient(server.url)
        _assert_once(client, run.run_id)
        for op in ({"op": "log_table", "run": run.key, "local_path": str(tmp_path / "again" / "metrics_table.json"),
                    "artifact_path": None, "artifact_file": "metrics_table.json"},
                   {"op": "log_inputs", "run": run.key,
                    "datasets": cohort_datasets(config, {"test": ["UCSF-PDGM-0003"]})}):
            if op["op"] == "log_table":
                (tmp_path / "again").mkdir()
                (tmp_path / "again" / "metrics_table.json").write_text(
                    json.dumps({"columns": ["metric", "value"], "data": [["auc", 0.8], ["mcc", None]]}))
            tracker.sender.send(op)  # a replay after a crash sends an operation again
        _assert_once(client, run.run_id)
    finally:
        server.stop()


def _assert_once(client, run_id):
    run = client.get_run(run_id)
    table = json.loads(open(client.download_artifacts(run_id, "metrics_table.json")).read())
    assert table == {"columns": ["metric", "value"], "data": [["auc", 0.8], ["mcc", None]]}
    assert json.loads(run.data.tags["mlflow.loggedArtifacts"]) == [{"path": "metrics_table.json", "type": "table"}]
    assert run.data.tags["mlflow.loggedImages"] == "True"
    assert any(a.path.startswith("images/roc") for a in client.list_artifacts(run_id, "images"))
    inputs = {i.tags[0].value: i.dataset for i in run.inputs.dataset_inputs}
    assert set(inputs) == {"training", "test"} and len(run.inputs.dataset_inputs) == 2
    assert json.loads(inputs["training"].profile) == {"num_rows": 2, "num_mutant": 1, "num_wildtype": 1}
    assert inputs["test"].name == "cohort-test"
