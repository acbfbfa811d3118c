"""One SQLite MLflow store, many writers: concurrent array jobs on both nodes plus the launcher.

The default tracking store is ``<work_dir>/mlflow.db``. SQLite takes one writer at a time, and
a writer that waits too long gets "database is locked" (mlflow PR #20014): MLflow raises it as a
5xx-class MlflowException, which the Tracker treats as an outage, so the record is journaled
and replayed, not lost. The test counts every param, metric step and artifact in the store
afterwards: each must be there exactly once, however many writes had to be spooled.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import cloudpickle
import submitit
from mlflow.tracking import MlflowClient

from idhhpc.hpc.sacct import sacct_rows
from idhhpc.tracking.tracker import Tracker
from idhhpc.tracking.uris import default_tracking_uri
from tests.support.slurm import slurm_marks, wait_for_final_state

pytestmark = slurm_marks(300)

cloudpickle.register_pickle_by_value(sys.modules[__name__])

TASKS = 6
PARAMS = 12
STEPS = 40
ARTIFACTS = 2
EXPERIMENT = "many-writers"


def write_fold(work_dir: str, fold: int) -> dict[str, int]:
    """One fold's worth of tracking from one array task: params, a metric per step, artifacts.
    Returns how many operations had to be spooled and how many are still pending."""
    work = Path(work_dir)
    tracker = Tracker(default_tracking_uri(work), EXPERIMENT, work / "spool")
    run = tracker.start_run(f"fold-{fold}", params={f"p{i}": fold * 100 + i for i in range(PARAMS)},
                            tags={"fold": fold})
    for step in range(STEPS):
        run.log_metrics({"loss": 1.0 / (step + 1), "fold": float(fold)}, step=step)
    for i in range(ARTIFACTS):
        path = work / f"fold-{fold}-artifact-{i}.txt"
        path.write_text(f"fold {fold} artifact {i}\n")
        run.log_artifact(path)
    ended = run.end()
    spooled = sum(1 for _ in tracker.journal.path.open()) if tracker.journal.path.exists() else 0
    return {"spooled": spooled, "pending": tracker.pending(), "ended": int(ended)}


def test_concurrent_jobs_and_the_launcher_write_one_sqlite_store_exactly_once(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    launcher = Tracker(default_tracking_uri(work), EXPERIMENT, work / "spool")
    launch_run = launcher.start_run("launch")  # creates the store and experiment before the jobs start
    executor = submitit.AutoExecutor(folder=tmp_path / "jobs", cluster="slurm")
    executor.update_parameters(slurm_partition="shared", cpus_per_task=1, mem_gb=1, timeout_min=5,
                               slurm_array_parallelism=TASKS)
    launcher_steps = 0
    done = threading.Event()

    def launcher_writes() -> None:  # the launcher logs while the jobs do, as `--wait` does
        nonlocal launcher_steps
        while not done.is_set():
            launch_run.log_metrics({"poll": float(launcher_steps)}, step=launcher_steps)
            launcher_steps += 1
            done.wait(0.05)

    writer = threading.Thread(target=launcher_writes)
    writer.start()
    try:
        jobs = executor.map_array(write_fold, [str(work)] * TASKS, range(TASKS))
        results = [job.result() for job in jobs]
    finally:
        done.set()
        writer.join()
    assert launch_run.end() and launcher.pending() == 0
    array_id = jobs[0].job_id.split("_")[0]
    wait_for_final_state(array_id)
    rows = sacct_rows([array_id], ("JobID", "NodeList", "Start", "End"), timeout_s=20)
    print(f"tasks: {[(r['JobID'], r['NodeList'], r['Start'], r['End']) for r in rows]}")
    print(f"per task (spooled ops, pending, ended): {[tuple(r.values()) for r in results]}; "
          f"launcher steps {launcher_steps}")
    assert {r["NodeList"] for r in rows} == {"node1", "node2"}
    assert max(r["Start"] for r in rows) < min(r["End"] for r in rows), "all tasks should overlap in time"
    assert all(r["pending"] == 0 and r["ended"] for r in results)

    client = MlflowClient(default_tracking_uri(work))
    experiment = client.get_experiment_by_name(EXPERIMENT)
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert sorted(runs) == sorted(["launch", *(f"fold-{i}" for i in range(TASKS))])
    for fold in range(TASKS):
        run = runs[f"fold-{fold}"]
        assert run.info.status == "FINISHED"
        assert run.data.params == {f"p{i}": str(fold * 100 + i) for i in range(PARAMS)}
        for key in ("loss", "fold"):
            steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
            assert sorted(steps) == list(range(STEPS)), f"fold {fold} {key}: steps {sorted(steps)}"
        artifacts = sorted(a.path for a in client.list_artifacts(run.info.run_id))
        assert artifacts == [f"fold-{fold}-artifact-{i}.txt" for i in range(ARTIFACTS)]
    polls = [m.step for m in client.get_metric_history(runs["launch"].info.run_id, "poll")]
    assert sorted(polls) == list(range(launcher_steps)) and launcher_steps > 0
