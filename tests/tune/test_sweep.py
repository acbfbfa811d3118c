"""A real local Ray sweep: trials as MLflow children with their params, best config, resume after interruption."""

from __future__ import annotations

import os
import signal
import sys
import tempfile
from pathlib import Path

import pytest
import ray
import yaml
from mlflow.tracking import MlflowClient
from ray import tune

from idhhpc.data.splits import load_splits
from idhhpc.tracking.runs import tracking_uri
from idhhpc.tune.folds import tuning_folds
from idhhpc.tune.runs import BEST_TAG, TRIAL_TAG, sweep_key
from idhhpc.tune.space import load_space
from idhhpc.tune.sweep import build_tuner, ensure_ray, experiment_path, run_sweep
from idhhpc.tuned import apply_tuned
from tests.support.jobs import tiny_job

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # trials run in workers without tests/ on sys.path
pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def local_ray():
    temp = tempfile.mkdtemp(prefix="rt", dir="/tmp")
    ray.init(num_cpus=2, include_dashboard=False, _temp_dir=temp, log_to_driver=False)
    yield
    ray.shutdown()


class RecordStarts(tune.Callback):
    """Appends every started trial id to a file (callbacks are pickled with the experiment)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_trial_start(self, iteration, trials, trial, **info):
        with open(self.path, "a") as out:
            out.write(trial.trial_id + "\n")


class InterruptAfter(RecordStarts):
    """Sends the driver SIGINT once ``n`` trials completed, as Ctrl+C or a Slurm signal would."""

    def __init__(self, path: Path, n: int) -> None:
        super().__init__(path)
        self.n, self.completed = n, 0

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.completed += 1
        marker = self.path.with_suffix(".interrupted")
        if self.completed >= self.n and not marker.exists():
            marker.write_text(trial.trial_id)
            os.kill(os.getpid(), signal.SIGINT)


def _trial_runs(config):
    client = MlflowClient(tracking_uri(config))
    experiment = client.get_experiment_by_name(config.tracking.experiment)
    runs = client.search_runs([experiment.experiment_id])
    sweeps = [r for r in runs if r.data.tags.get("idhhpc.kind") == "sweep"]
    trials = [r for r in runs if TRIAL_TAG in r.data.tags]
    return sweeps, trials


def test_sweep_logs_trials_as_children_and_writes_best_config(workspace, local_ray):
    config = tiny_job(workspace, "tune.num_samples=4", "tune.searcher=optuna")
    summary = run_sweep(config)
    assert summary.trials == 4 and summary.errored == 0 and not summary.restored
    assert 4 <= summary.epochs_spent <= 8
    sweeps, trials = _trial_runs(config)
    assert len(sweeps) == 1 and len(trials) == 4
    assert all(r.data.tags["mlflow.parentRunId"] == sweeps[0].info.run_id for r in trials)
    assert all({"train.max_lr", "train.focal_gamma", "train.pct_start"} <= set(r.data.params) for r in trials)
    assert all("val/auc" in r.data.metrics and "val/auc_fold1" in r.data.metrics for r in trials)
    assert all(r.info.status == "FINISHED" for r in trials)
    assert [r.data.tags[BEST_TAG] for r in trials].count("true") == 1
    best = yaml.safe_load((workspace / "work" / "best_config.yaml").read_text())["train"]
    assert best == summary.best_config and set(best) >= {"max_lr", "focal_gamma"}
    tuned = apply_tuned(config)
    assert tuned.train.max_lr == pytest.approx(best["max_lr"]) and tuned.train.accumulate == best["accumulate"]


def test_interrupted_sweep_resumes_without_redoing_finished_trials(workspace, local_ray):
    config = tiny_job(workspace, "tune.num_samples=4", "tune.max_concurrent=1", "tune.searcher=random", "tune.epochs=1")
    starts = workspace / "starts.txt"
    try:
        run_sweep(config, callbacks=[InterruptAfter(starts, 2)])
    except Exception:  # noqa: BLE001 - whether Ray raises after SIGINT does not matter here
        pass
    first = starts.read_text().split()
    interrupted_after = starts.with_suffix(".interrupted").read_text()
    assert tune.Tuner.can_restore(str(experiment_path(config)))
    before = set(first)
    summary = run_sweep(config)
    assert summary.restored and summary.trials == 4 and summary.errored == 0
    second = starts.read_text().split()[len(first):]
    finished_first = set(first[:2])
    assert interrupted_after in finished_first
    assert not finished_first & set(second), "finished trials were run again"
    assert len(before | set(second)) == 4
    _, trials = _trial_runs(config)
    assert sorted(r.data.tags[TRIAL_TAG] for r in trials) == sorted(before | set(second))


def crash_once_after_first_epoch(trial_config, marker, **kwargs):
    """cv_trainable that dies once right after its first checkpointed report, like a lost node."""
    import idhhpc.tune.trainable as trainable

    report = trainable._report

    def report_then_crash(cv, metrics):
        report(cv, metrics)
        if not Path(marker).exists():
            Path(marker).write_text(str(metrics["epoch"]))
            raise RuntimeError("injected failure after epoch 0")

    trainable._report = report_then_crash
    trainable.cv_trainable(trial_config, **kwargs)


def test_failed_trial_is_retried_from_its_last_checkpoint(workspace, local_ray):
    config = tiny_job(workspace, "tune.num_samples=1", "tune.max_failures=1", "tune.searcher=random")
    marker = workspace / "crashed"
    trainable = tune.with_resources(tune.with_parameters(
        crash_once_after_first_epoch, marker=str(marker), job_json=config.model_dump_json(),
        folds=tuning_folds(load_splits(config), None), sweep_key=sweep_key(config), sweep_run_id=None), {"cpu": 1})
    ensure_ray(config)
    results = build_tuner(config, load_space(config.tune.space), trainable).fit()
    assert marker.read_text() == "0"
    result = results[0]
    assert result.error is None and result.metrics["training_iteration"] == 2
    assert result.metrics["epoch"] == 1
    _, trials = _trial_runs(config)
    history = MlflowClient(tracking_uri(config)).get_metric_history(trials[0].info.run_id, "val/auc")
    assert sorted(m.step for m in history) == [0, 1], "the retry trained epoch 0 again"
