"""The embedded SQLite store: no server, `/` in metric keys, nested runs, idempotent sends."""

import logging

from mlflow.tracking import MlflowClient

from idhhpc.tracking import Tracker, default_tracking_uri
from idhhpc.tracking.sender import RUN_KEY_TAG
from tests.support.mlflow_server import free_port


def test_default_uri_is_sqlite_in_work_dir(tmp_path):
    assert default_tracking_uri(tmp_path / "job") == f"sqlite:///{(tmp_path / 'job').resolve()}/mlflow.db"


def test_nested_runs_with_slash_metric_keys_and_artifacts(tmp_path):
    uri = default_tracking_uri(tmp_path)
    tracker = Tracker(uri, "local", tmp_path / "spool")
    plot = tmp_path / "roc.txt"
    plot.write_text("roc")
    with tracker.start_run("launch", params={"train.lr": 0.001}) as parent:
        with tracker.start_run("fold-0", parent_run_id=parent, tags={"fold": 0}) as child:
            for step in range(3):
                child.log_metrics({"train/loss": 1.0 / (step + 1), "val/auc": 0.5}, step=step)
            child.log_artifact(plot, "plots")

    client = MlflowClient(uri)
    run = client.get_run(child.run_id)
    assert run.data.tags["mlflow.parentRunId"] == parent.run_id
    assert run.data.tags["fold"] == "0"
    assert [m.step for m in client.get_metric_history(child.run_id, "train/loss")] == [0, 1, 2]
    assert run.data.metrics["val/auc"] == 0.5
    assert run.info.status == "FINISHED"
    assert client.get_run(parent.run_id).data.params == {"train.lr": "0.001"}
    assert run.info.artifact_uri.startswith((tmp_path / "mlartifacts").resolve().as_uri())
    assert [f.path for f in client.list_artifacts(child.run_id, "plots")] == ["plots/roc.txt"]


def test_failed_block_marks_run_failed(tmp_path):
    uri = default_tracking_uri(tmp_path)
    tracker = Tracker(uri, "local", tmp_path / "spool")
    try:
        with tracker.start_run("fit") as run:
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert MlflowClient(uri).get_run(run.run_id).info.status == "FAILED"


def test_resending_create_run_finds_the_existing_run(tmp_path):
    tracker = Tracker(default_tracking_uri(tmp_path), "local", tmp_path / "spool")
    run = tracker.start_run("fit")
    first_id = run.run_id
    tracker.sender.run_ids.clear()
    tracker.sender.send({"op": "create_run", "run": run.key, "name": "fit", "time_ms": 1})
    assert tracker.sender.run_ids[run.key] == first_id
    found = tracker.sender.client.search_runs([tracker.sender.experiment_id()], f"tags.`{RUN_KEY_TAG}` = '{run.key}'")
    assert len(found) == 1


def test_unreachable_server_spools_and_warns_once(tmp_path, caplog):
    tracker = Tracker(f"http://127.0.0.1:{free_port()}", "offline", tmp_path / "spool")
    with caplog.at_level(logging.WARNING, logger="idhhpc.tracking"):
        run = tracker.start_run("fit", params={"a": 1})
        for step in range(5):
            run.log_metrics({"train/loss": 0.1}, step=step)
        run.set_tags({"stage": "fit"})
    warnings = [r for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(warnings) == 1
    assert tracker.pending() == 1 + 1 + 5 + 1
    assert run.run_id is None
    assert run.end() is False
    assert tracker.pending() == 9


def test_a_reopened_run_keeps_its_first_params_and_gets_the_new_ones(tmp_path, caplog):
    """A resumed sweep reopens its run by key and logs the config again; one changed value (the
    relaunch's executor) used to make MLflow reject the whole batch with an ERROR."""
    tracker = Tracker(default_tracking_uri(tmp_path), "local", tmp_path / "spool")
    run = tracker.start_run("tune", params={"hpc.executor": "local", "train.epochs": 4})
    with caplog.at_level(logging.INFO, logger="idhhpc.tracking"):
        run.log_params({"hpc.executor": "debug", "train.epochs": 4, "tune.resumed": True})
    assert tracker.pending() == 0
    assert MlflowClient(tracker.sender.tracking_uri).get_run(run.run_id).data.params == {
        "hpc.executor": "local", "train.epochs": "4", "tune.resumed": "True"}
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("keeps the first values of hpc.executor" in r.getMessage() for r in caplog.records)
