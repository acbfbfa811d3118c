"""Run (or resume) a sweep: Optuna TPE or random search, ASHA early stopping, Ray on one or many nodes.

The experiment lives in ``<work_dir>/tune/sweep``; when a state is found there the sweep is
restored instead of started, so an interrupted sweep keeps its finished trials and continues
the others from their last checkpoint. The best configuration is written to
``best_config.yaml`` for the ``cv`` and ``fit`` stages.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import ray
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search.basic_variant import BasicVariantGenerator
from ray.tune.search.optuna import OptunaSearch

from idhhpc.config import JobConfig
from idhhpc.data.splits import load_splits
from idhhpc.tune.folds import tuning_folds
from idhhpc.tune.runs import BEST_TAG, keyed_run, open_sweep_run, sweep_key, trial_key
from idhhpc.tune.space import SearchSpace, load_space
from idhhpc.tune.trainable import METRIC, cv_trainable
from idhhpc.tuned import write_best_config
from idhhpc.workdir import WorkDir

log = logging.getLogger(__name__)

EXPERIMENT = "sweep"


@dataclass
class SweepSummary:
    best_config: dict[str, Any]
    best_val_auc: float
    trials: int
    errored: int
    epochs_spent: int
    experiment: Path
    restored: bool


def experiment_path(config: JobConfig) -> Path:
    return WorkDir(config.work_dir).tune.resolve() / EXPERIMENT


def ensure_ray(config: JobConfig, temp_dir: str | None = None) -> None:
    """Join the cluster named by ``RAY_ADDRESS`` (set by ``slurm/ray-on-slurm.sh``), else start a
    local Ray sized for ``max_concurrent`` trials, with a short temp dir (Ray's sockets live there
    and Unix socket paths are limited to about 100 characters)."""
    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS") or int(os.environ.get("SLURM_JOB_NUM_NODES", "1")) > 1:
        ray.init(address=os.environ.get("RAY_ADDRESS", "auto"))
        return
    t = config.tune
    cpus = max(1, math.ceil(t.max_concurrent * t.cpus_per_trial))
    ray.init(num_cpus=cpus, include_dashboard=False, _temp_dir=temp_dir or tempfile.mkdtemp(prefix="ray", dir="/tmp"))


def make_search(config: JobConfig) -> Any:
    t = config.tune
    if t.searcher == "optuna":
        return OptunaSearch(seed=config.seed)
    return BasicVariantGenerator(random_state=config.seed, max_concurrent=t.max_concurrent)


def make_scheduler(config: JobConfig) -> ASHAScheduler | FIFOScheduler:
    """ASHA stops the weaker trials at each rung; FIFO runs every trial to the full budget (baseline)."""
    if config.tune.scheduler == "fifo":
        return FIFOScheduler()
    epochs = config.tune.epochs or config.train.epochs
    return ASHAScheduler(time_attr="training_iteration", max_t=epochs,
                         grace_period=min(config.tune.grace_period, epochs),
                         reduction_factor=config.tune.reduction_factor)


def make_trainable(config: JobConfig, sweep_run_id: str | None) -> Any:
    folds = tuning_folds(load_splits(config), config.tune.folds)
    trainable = tune.with_parameters(cv_trainable, job_json=config.model_dump_json(), folds=folds,
                                     sweep_key=sweep_key(config), sweep_run_id=sweep_run_id)
    return tune.with_resources(trainable, {"cpu": config.tune.cpus_per_trial, "gpu": config.tune.gpus_per_trial})


def build_tuner(config: JobConfig, space: SearchSpace, trainable: Any, callbacks: Sequence[Any] = ()) -> tune.Tuner:
    t = config.tune
    path = experiment_path(config)
    if tune.Tuner.can_restore(str(path)):
        log.info("resuming the sweep in %s", path)
        return tune.Tuner.restore(str(path), trainable=trainable, resume_errored=True, param_space=space.to_ray())
    search = make_search(config)
    limit = t.max_concurrent if isinstance(search, OptunaSearch) else None
    # reuse_actors: a new trial runs in a finished trial's worker process instead of a fresh one
    # that imports torch, MONAI and MLflow again (seconds per trial, the bulk of a short cached trial)
    tune_config = tune.TuneConfig(metric=METRIC, mode="max", search_alg=search, scheduler=make_scheduler(config),
                                  num_samples=t.num_samples, max_concurrent_trials=limit, reuse_actors=True)
    run_config = tune.RunConfig(name=EXPERIMENT, storage_path=str(path.parent),
                                failure_config=tune.FailureConfig(max_failures=t.max_failures),
                                checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
                                callbacks=list(callbacks), verbose=1)
    return tune.Tuner(trainable, param_space=space.to_ray(), tune_config=tune_config, run_config=run_config)


def run_sweep(config: JobConfig, callbacks: Sequence[Any] = (), temp_dir: str | None = None) -> SweepSummary:
    space = load_space(config.tune.space)
    tracker, sweep_run = open_sweep_run(config)
    ensure_ray(config, temp_dir)
    restored = tune.Tuner.can_restore(str(experiment_path(config)))
    tuner = build_tuner(config, space, make_trainable(config, sweep_run.run_id), callbacks)
    results = tuner.fit()
    summary = summarize(config, results, restored)
    _record(config, tracker, sweep_run, results, summary)
    return summary


def summarize(config: JobConfig, results: Any, restored: bool) -> SweepSummary:
    best = results.get_best_result(metric=METRIC, mode="max", scope="all", filter_nan_and_inf=True)
    best_auc = float(best.metrics_dataframe[METRIC].max())
    epochs = sum(int((r.metrics or {}).get("training_iteration", 0)) for r in results)
    tuned = {name: _plain(value) for name, value in best.config.items()}
    return SweepSummary(tuned, best_auc, len(results), len(results.errors), epochs, experiment_path(config), restored)


def _record(config: JobConfig, tracker: Any, sweep_run: Any, results: Any, summary: SweepSummary) -> None:
    """best_config.yaml, the best trial tagged, every trial run ended (ASHA stops trials mid-way)."""
    path = write_best_config(config, summary.best_config)
    best_id = results.get_best_result(metric=METRIC, mode="max", scope="all", filter_nan_and_inf=True).metrics["trial_id"]
    key = sweep_key(config)
    for result in results:
        trial_id = (result.metrics or {}).get("trial_id")
        if trial_id is None:
            continue
        run = keyed_run(tracker, trial_key(key, trial_id), f"trial-{trial_id}")
        run.set_tags({BEST_TAG: str(trial_id == best_id).lower()})
        run.end("FAILED" if result.error else "FINISHED")
    sweep_run.log_metrics({"tune/best_val_auc": summary.best_val_auc, "tune/epochs_spent": summary.epochs_spent,
                           "tune/trials": summary.trials, "tune/errored": summary.errored})
    sweep_run.set_tags({"idhhpc.tune.best_trial": best_id})
    sweep_run.log_artifact(path, "tune")
    sweep_run.end()
    if not tracker.flush():
        log.warning("%d MLflow records of the sweep are still spooled in %s", tracker.pending(), tracker.journal.dir)


def _plain(value: Any) -> Any:
    """numpy scalars from the searchers as plain Python numbers, so the YAML stays readable."""
    return value.item() if hasattr(value, "item") else value
