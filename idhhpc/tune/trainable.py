"""The Ray Tune function trainable: one trial cross-validates one configuration.

Each epoch it reports the fold-mean validation AUC (what ASHA and the searcher compare) with a
checkpoint of every fold's tail, so a failed trial restarts from its last epoch and a resumed
sweep continues paused trials. Everything it logs to MLflow goes through ``Tracker``, which
spools records under the work dir while the server is unreachable.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune

from idhhpc.config import JobConfig
from idhhpc.data.dataset import ShardDataset
from idhhpc.model.calibrate import calibrated_network
from idhhpc.model.network import build_network
from idhhpc.train.prefix_cache import usable_cache
from idhhpc.train.seeding import derive_seed
from idhhpc.tune.folds import checked_folds
from idhhpc.tune.lockstep import LockstepCV
from idhhpc.tune.runs import TRIAL_TAG, keyed_run, tracker_for, trial_key, trial_params
from idhhpc.workdir import WorkDir

CHECKPOINT_FILE = "cv.pt"
MODEL_STREAM = 21
METRIC = "val_auc_mean"
NODE_IP_TAG = "idhhpc.node_ip"
SLURM_NODE_TAG = "idhhpc.slurm_node"


def trial_job(job: JobConfig, trial_config: dict[str, Any]) -> JobConfig:
    """The job with the trial's ``train`` values and the sweep's epoch budget, validated."""
    train = job.train.model_dump() | dict(trial_config)
    train |= {"epochs": job.tune.epochs or job.train.epochs, "num_workers": 0}
    return job.model_copy(update={"train": type(job.train)(**train)})


def build_cv(job: JobConfig, folds: list[dict[str, list[str]]]) -> LockstepCV:
    """Seed the network's construction, so every attempt of a trial gets the same frozen prefix;
    train the tails from the feature cache when there is a usable one."""
    work = WorkDir(job.work_dir)
    folds = checked_folds(folds, work.splits)
    torch.manual_seed(derive_seed(job.seed, MODEL_STREAM))
    cache = usable_cache(job)
    model = build_network(job) if cache else calibrated_network(job, ShardDataset(work.index, folds[0]["train"]))
    return LockstepCV(model, folds, work.index, job.train, job.seed, features=cache)


def cv_trainable(trial_config: dict[str, Any], job_json: str, folds: list[dict[str, list[str]]],
                 sweep_key: str, sweep_run_id: str | None) -> None:
    job = trial_job(JobConfig.model_validate_json(job_json), trial_config)
    cv = build_cv(job, folds)
    _resume(cv)
    trial_id = tune.get_context().get_trial_id()
    tracker = tracker_for(job)
    run = keyed_run(tracker, trial_key(sweep_key, trial_id), f"trial-{trial_id}", parent_run_id=sweep_run_id,
                    params=trial_params(trial_config) | {"tune.folds": len(folds), "train.epochs": job.train.epochs},
                    tags={TRIAL_TAG: trial_id, "idhhpc.stage": "tune-trial"} | where_it_runs())
    while cv.epochs_done < job.train.epochs:
        metrics = cv.epoch()
        run.log_metrics(_mlflow_metrics(metrics), step=metrics["epoch"])
        _report(cv, metrics)
    run.end()


def where_it_runs() -> dict[str, str]:
    """Tags naming the node a trial ran on, so a sweep's runs show how Ray spread the trials over
    the allocation: the Ray node's address, and Slurm's node name (Slurm sets it for every process
    a step starts, Ray's workers included; absent outside Slurm)."""
    tags = {NODE_IP_TAG: ray.util.get_node_ip_address()}
    if os.environ.get("SLURMD_NODENAME"):
        tags[SLURM_NODE_TAG] = os.environ["SLURMD_NODENAME"]
    return tags


def _mlflow_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    renamed = {"val/auc": metrics["val_auc_mean"], "val/auc_std": metrics["val_auc_std"],
               "train/loss": metrics["train_loss_mean"]}
    return renamed | {k.replace("val_auc_", "val/auc_"): v for k, v in metrics.items() if k.startswith("val_auc_fold")}


def _report(cv: LockstepCV, metrics: dict[str, Any]) -> None:
    with tempfile.TemporaryDirectory(prefix="cv-") as folder:
        torch.save(cv.state_dict(), Path(folder) / CHECKPOINT_FILE)
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))


def _resume(cv: LockstepCV) -> None:
    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return
    with checkpoint.as_directory() as folder:
        cv.load_state_dict(torch.load(Path(folder) / CHECKPOINT_FILE, map_location=cv.device, weights_only=True))
