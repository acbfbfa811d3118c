"""Stages ``cv`` (one task per fold) and ``fit`` (the final model on the 70/15 split).

Both are submitit ``Checkpointable`` jobs: on Slurm's preemption or time-limit signal the
trainer saves ``last.pt`` at the next micro-step and the job is requeued, resuming exactly.
Run with several tasks (``hpc.stages.fit.tasks_per_node`` = GPUs per node, ``nodes``), they
train data-parallel: every task is a rank, and rank 0 alone talks to MLflow and writes outputs.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import torch
import yaml
from torch.utils.data import DataLoader, Subset

from idhhpc.config import JobConfig
from idhhpc.data.dataset import ShardDataset
from idhhpc.evaluate.thresholds import choose_threshold
from idhhpc.io import atomic_path, atomic_write_json
from idhhpc.model.calibrate import calibrate_batchnorm
from idhhpc.model.network import IDHNet, build_model
from idhhpc.stages.split import load_splits
from idhhpc.stages.track import stage_run
from idhhpc.train import distributed
from idhhpc.train.checkpoint import LAST_NAME, load_checkpoint
from idhhpc.train.preemption import TrainingJob
from idhhpc.train.settings import TrainSettings
from idhhpc.train.stopping import StopRequest
from idhhpc.train.trainer import TrainResult, train
from idhhpc.workdir import WorkDir

log = logging.getLogger(__name__)

SELECTION_FILE = "selection.json"
MODEL_FILE = "model.pt"


def with_best_config(config: JobConfig) -> JobConfig:
    """Apply ``best_config.yaml`` from a finished sweep, when there is one, to the train section."""
    path = WorkDir(config.work_dir).best_config
    if not path.is_file():
        return config
    tuned = yaml.safe_load(path.read_text()).get("train", {})
    log.info("using tuned hyperparameters from %s: %s", path, tuned)
    return config.model_copy(update={"train": config.train.model_copy(update=tuned)})


def train_settings(config: JobConfig) -> TrainSettings:
    fields = TrainSettings.__dataclass_fields__
    return TrainSettings(**{k: v for k, v in config.train.model_dump().items() if k in fields}, seed=config.seed)


def build_network(config: JobConfig) -> IDHNet:
    """Initial weights come from ``config.seed`` (without touching the global RNG), so two runs of
    one config, or a requeued run and an uninterrupted one, start from the same network."""
    m = config.model
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return build_model(variant=m.variant, in_channels=len(config.data.modalities), num_classes=2,
                           dropout=m.dropout, trainable_stages=m.trainable_stages,
                           activation_checkpointing=m.activation_checkpointing, channels_last=m.channels_last,
                           pretrained_2d=m.pretrained_2d, bn_momentum=m.bn_momentum,
                           freeze_batchnorm=m.freeze_batchnorm)


def calibrated_network(config: JobConfig, train_ds: ShardDataset) -> IDHNet:
    """A new network whose BatchNorm statistics come from the first training volumes, unless
    ImageNet weights (with their own statistics) were loaded; see ``idhhpc.model.calibrate``."""
    model = build_network(config)
    count = min(config.model.calibration_samples, len(train_ds))
    if config.model.pretrained_2d is None and count:
        # drop_last: a lone volume has no batch statistics once the maps shrink to one voxel
        batches = DataLoader(Subset(train_ds, range(count)), batch_size=max(2, config.train.micro_batch),
                             drop_last=count >= 2)
        calibrate_batchnorm(model, (batch["image"] for batch in batches))
    return model


def train_and_track(config: JobConfig, run_name: str, train_ids: list[str], val_ids: list[str],
                    stop: StopRequest | None = None) -> dict[str, Any]:
    """Train one model, log every epoch to MLflow, choose the threshold on validation, record it.

    Under data parallelism the other ranks only train (rank 0 logs, saves and exports) and
    return an empty dict.
    """
    work = WorkDir(config.work_dir)
    run_dir = work.checkpoints(run_name)
    train_ds, val_ds = ShardDataset(work.index, train_ids), ShardDataset(work.index, val_ids)
    config_hash = config.section_hash("preprocess", "split", "model", "train")
    network, settings = calibrated_network(config, train_ds), train_settings(config)
    restart = _made_by_other_config(run_dir / LAST_NAME, config_hash)
    if not distributed.current().is_main:
        train(network, train_ds, val_ds, settings, run_dir, config_hash=config_hash, stop=stop, restart=restart)
        return {}
    with stage_run(config, run_name) as run:
        result = train(network, train_ds, val_ds, settings, run_dir, config_hash=config_hash, stop=stop,
                       restart=restart, on_epoch_end=lambda epoch, metrics: run.log_metrics(_numeric(metrics), step=epoch))
        selection = _selection(config, run_name, result)
        atomic_write_json(run_dir / SELECTION_FILE, selection)
        export_model(config, result, selection, run_dir / MODEL_FILE)
        run.log_metrics({"val/best_auc": selection["val_auc"], "val/threshold": selection["threshold"],
                         "best_epoch": selection["best_epoch"]})
        run.log_artifact(run_dir / SELECTION_FILE, "selection")
        run.log_artifact(run_dir / MODEL_FILE, "model")
    return selection


def _made_by_other_config(last: Path, config_hash: str) -> bool:
    """A ``last.pt`` left by a different configuration is not resumed: the run starts afresh."""
    if not last.is_file():
        return False
    stale = load_checkpoint(last).get("config_hash") != config_hash
    if stale:
        log.warning("%s was written for another configuration; training %s from scratch", last, last.parent.name)
    return stale


def _selection(config: JobConfig, run_name: str, result: TrainResult) -> dict[str, Any]:
    best = next((h for h in result.history if h["epoch"] == result.best_epoch), {})
    threshold = choose_threshold(result.best_val_labels, result.best_val_probs, config.evaluate.threshold)
    return {"run": run_name, "best_epoch": result.best_epoch, "val_auc": best.get("val/auc", math.nan),
            "threshold": float(threshold), "threshold_method": config.evaluate.threshold,
            "checkpoint": str(result.best_checkpoint), "history": result.history,
            "val": {"patient_ids": result.best_val_patient_ids, "labels": result.best_val_labels,
                    "probs": result.best_val_probs}}


def export_model(config: JobConfig, result: TrainResult, selection: dict[str, Any], path: Path) -> Path:
    """The deployable model: best weights plus everything ``predict`` needs to treat a new
    patient exactly as training did (job config, modalities, threshold chosen on validation).
    Plain tensors and strings only, so it loads with ``torch.load(..., weights_only=True)``."""
    weights = load_checkpoint(result.best_checkpoint)["model"]
    payload = {"format": "idhhpc-model", "version": 1, "model": weights, "config": config.model_dump_json(),
               "threshold": selection["threshold"], "threshold_method": selection["threshold_method"],
               "val_auc": selection["val_auc"], "run": selection["run"]}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def _numeric(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and k != "epoch"}


def _cv_fold(config: JobConfig, fold: int, stop: StopRequest | None = None) -> dict[str, Any]:
    config = with_best_config(config)
    split = load_splits(config)["folds"][fold]
    with distributed.session():
        return train_and_track(config, f"fold-{fold}", split["train"], split["val"], stop)


def _fit(config: JobConfig, stop: StopRequest | None = None) -> dict[str, Any]:
    config = with_best_config(config)
    split = load_splits(config)["fit"]
    with distributed.session():
        return train_and_track(config, "fit", split["train"], split["val"], stop)


run_cv_fold = TrainingJob(_cv_fold)
run_fit = TrainingJob(_fit)
