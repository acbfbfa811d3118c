"""Against a real `mlflow server`: child runs across processes, and an outage in mid-run."""

import logging
import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient

from idhhpc.tracking import Tracker
from tests.support.mlflow_server import start_mlflow_server

pytestmark = pytest.mark.mlflow


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    _, server = start_mlflow_server(tmp_path_factory.mktemp("mlflow-server"))
    yield server
    server.stop()


CHILD_SCRIPT = """
import sys
from idhhpc.tracking import Tracker
url, parent_id, spool = sys.argv[1:4]
tracker = Tracker(url, "cv", spool)
with tracker.start_run("fold-0", parent_run_id=parent_id, params={"fold": 0}) as run:
    run.log_metrics({"val/auc": 0.75}, step=1)
print(run.run_id)
"""


def test_children_from_other_processes_carry_parent_params_metrics_artifacts(server, tmp_path):
    tracker = Tracker(server.url, "cv", tmp_path / "spool")
    parent = tracker.start_run("launch", params={"train.lr": "0.001"})
    fold_id = subprocess.run(
        [sys.executable, "-c", CHILD_SCRIPT, server.url, parent.run_id, str(tmp_path / "spool")],
        check=True, capture_output=True, text=True,
    ).stdout.split()[-1]
    report = tmp_path / "report.json"
    report.write_text('{"auc": 0.8}')
    for stage in ("fit", "evaluate"):
        with tracker.start_run(stage, parent_run_id=parent.run_id, params={"stage": stage}) as run:
            for step in range(3):
                run.log_metrics({"train/loss": 1.0 - 0.1 * step}, step=step)
            run.log_artifact(report, "reports")
    parent.end()

    client = MlflowClient(server.url)
    children = client.search_runs(
        [client.get_experiment_by_name("cv").experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent.run_id}'",
    )
    by_name = {run.info.run_name: run for run in children}
    assert set(by_name) == {"fold-0", "fit", "evaluate"}
    assert by_name["fold-0"].info.run_id == fold_id
    assert by_name["fold-0"].data.metrics == {"val/auc": 0.75}
    fit = by_name["fit"]
    assert fit.data.params == {"stage": "fit"}
    assert [m.value for m in client.get_metric_history(fit.info.run_id, "train/loss")] == pytest.approx([1.0, 0.9, 0.8])
    assert [f.path for f in client.list_artifacts(fit.info.run_id, "reports")] == ["reports/report.json"]


def test_outage_mid_run_loses_nothing_and_duplicates_nothing(server, tmp_path, caplog):
    tracker = Tracker(server.url, "outage", tmp_path / "spool")
    parent = tracker.start_run("launch")
    run = tracker.start_run("fold-0", parent_run_id=parent.run_id, params={"before": 1})
    ckpt = tmp_path / "ckpt.txt"
    for step in range(3):
        run.log_metrics({"train/loss": float(step)}, step=step)
    ckpt.write_text("epoch-2")
    run.log_artifact(ckpt, "checkpoints")

    server.stop(hard=True)
    with caplog.at_level(logging.WARNING, logger="idhhpc.tracking"):
        for step in range(3, 10):
            run.log_metrics({"train/loss": float(step), "val/auc": 0.5}, step=step)
        run.log_params({"during": 2})
        ckpt.write_text("epoch-9")
        run.log_artifact(ckpt, "checkpoints/last")
        ckpt.write_text("overwritten after the call")
        late = tracker.start_run("evaluate", parent_run_id=parent.run_id)
        late.log_metrics({"test/auc": 0.9})
        run.end()
        late.end()
    assert len([r for r in caplog.records if "unreachable" in r.getMessage()]) == 1
    assert tracker.pending() > 0
    assert late.known_run_id() is None

    server.start()
    assert tracker.flush()
    assert tracker.flush()
    _assert_everything_once(MlflowClient(server.url), run.run_id, late.run_id, parent.run_id)


def _assert_everything_once(client, run_id, late_id, parent_id):
    history = client.get_metric_history(run_id, "train/loss")
    assert sorted(m.step for m in history) == list(range(10))
    assert len(client.get_metric_history(run_id, "val/auc")) == 7
    run = client.get_run(run_id)
    assert run.data.params == {"before": "1", "during": "2"}
    assert run.info.status == "FINISHED"
    assert [f.path for f in client.list_artifacts(run_id, "checkpoints/last")] == ["checkpoints/last/ckpt.txt"]
    local = client.download_artifacts(run_id, "checkpoints/last/ckpt.txt")
    assert open(local).read() == "epoch-9"
    late = client.get_run(late_id)
    assert late.data.tags["mlflow.parentRunId"] == parent_id
    assert late.data.metrics == {"test/auc": 0.9}
