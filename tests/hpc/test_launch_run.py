"""The launch's MLflow parent run ends with the launch: FINISHED on success, FAILED on failure."""

from __future__ import annotations

from mlflow.tracking import MlflowClient

from idhhpc.launch import main


def launch_status(tmp_path, *overrides) -> tuple[int, str]:
    work = tmp_path / "work"
    code = main(["--executor", "debug", "--stages", "cohort", "-q", "--set", f"work_dir={work}",
                 "--set", f"data.root={tmp_path / 'cohort'}", "--set", "data.phantom.patients=6",
                 "--set", "data.phantom.shape=[24,24,16]", "--set", "data.min_patients=2", *overrides])
    client = MlflowClient(f"sqlite:///{work.resolve() / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("idhhpc").experiment_id],
                              filter_string="tags.`idhhpc.kind` = 'launch'")
    return code, runs[0].info.status


def test_successful_launch_finishes_its_parent_run(tmp_path):
    assert launch_status(tmp_path) == (0, "FINISHED")


def test_failed_launch_marks_its_parent_run_failed(tmp_path):
    code, status = launch_status(tmp_path, "--set", "data.min_patients=50")
    assert code != 0 and status == "FAILED"
