"""Train one model for a named run of the work dir and export it: what ``cv`` and ``fit`` share.

A run trains on given patients, logs every epoch to MLflow, chooses the decision threshold on
its validation patients, writes ``selection.json`` and exports ``model.pt``. Run with several
tasks (data parallelism), every task trains and rank 0 alone talks to MLflow and writes outputs.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import torch

from idhhpc.atomic import atomic_path, atomic_write_json, sha256_file
from idhhpc.config import JobConfig, fingerprint, save_resolved
from idhhpc.evaluate.calibration import (
    apply_temperature,
    fit_temperature,
    negative_log_likelihood,
)
from idhhpc.evaluate.thresholds import choose_threshold
from idhhpc.model.initialisation import describe_initialisation
from idhhpc.train.locator import read_locator_views, train_locator
from idhhpc.model.memory import fit_to_memory_budget
from idhhpc.predictor import EXPORT_FORMAT
from idhhpc.tracking.identity import training_identity
from idhhpc.tracking.records import epoch_logger, log_training_figure
from idhhpc.tracking.runs import stage_run
from idhhpc.train import distributed
from idhhpc.train.checkpoint import load_checkpoint
from idhhpc.train.prefix_cache import cache_sections, training_inputs
from idhhpc.train.stopping import StopRequest
from idhhpc.train.takeoff import (
    NoTakeOff,
    TakeoffRule,
    attempt_identity,
    attempt_seed,
    read_attempts,
    record_failure,
)
from idhhpc.train.trainer import TrainResult, train
from idhhpc.tuned import apply_tuned
from idhhpc.workdir import WorkDir

log = logging.getLogger(__name__)

EXPORT_VERSION = 1


def training_config_hash(config: JobConfig) -> str:
    """The sections of the job a run's training depends on."""
    return config.section_hash("preprocess", "split", "model", *cache_sections(config), "train")


def run_identity(config: JobConfig, train_ids: list[str], val_ids: list[str]) -> str:
    """What a run's checkpoints are tied to: the training sections of the job, the preprocessed
    data (the shard index, which records every shard's sha256) and the run's own patients. A
    change in any of them starts the run afresh: a ``last.pt`` of other data (a regenerated
    cohort, new shards) is never resumed, while a requeued job, which changes none, resumes."""
    index = WorkDir(config.work_dir).index
    data = sha256_file(index) if index.is_file() else None
    return fingerprint([training_config_hash(config), data, sorted(train_ids), sorted(val_ids)])


def checkpoint_identity(config: JobConfig, train_ids: list[str], val_ids: list[str], attempt: int) -> str:
    """The identity ``last.pt`` of one take-off attempt carries (``config`` with its tuned values)."""
    return attempt_identity(run_identity(config, train_ids, val_ids), attempt)


def checkpoint_of(last: Path, identity: str) -> dict[str, Any] | None:
    """The one comparison of run identities: ``last.pt``'s state when it exists and belongs to
    ``identity``, else None (a run of another config, data or patients, or no run yet)."""
    if not last.is_file():
        return None
    state = load_checkpoint(last, mmap=True)
    return state if state.get("config_hash") == identity else None


def run_finished(config: JobConfig, run_name: str, train_ids: list[str], val_ids: list[str]) -> bool:
    """``last.pt`` is the finished end of this run: the attempt ``selection.json`` records (a
    take-off restart trains attempt k under its own identity), of ``config`` with its tuned values,
    on these data and patients."""
    work = WorkDir(config.work_dir)
    attempt = json.loads(work.selection(run_name).read_text()).get("takeoff", {}).get("attempts", 1) - 1
    identity = checkpoint_identity(apply_tuned(config), train_ids, val_ids, attempt)
    state = checkpoint_of(work.last_checkpoint(run_name), identity)
    return state is not None and bool(state["progress"]["finished"])


def train_run(config: JobConfig, run_name: str, train_ids: list[str], val_ids: list[str],
              stop: StopRequest | None = None) -> dict[str, Any]:
    """Train ``run_name`` with the tuned configuration inside the job's process group (if any)."""
    config = apply_tuned(config)
    with distributed.session():
        return train_and_track(config, run_name, train_ids, val_ids, stop)


def train_and_track(config: JobConfig, run_name: str, train_ids: list[str], val_ids: list[str],
                    stop: StopRequest | None = None) -> dict[str, Any]:
    """Train one model, log every epoch to MLflow, choose the threshold on validation, record it.

    Under data parallelism the other ranks only train (rank 0 logs, saves and exports) and
    return an empty dict.
    """
    work = WorkDir(config.work_dir)
    run_dir = work.checkpoints(run_name)
    log.info("%s: %s", run_name, describe_initialisation(config))
    if config.train.ema_decay and config.model.norm == "batch" and config.model.pretrained == "none":
        log.warning("%s: train.ema_decay with BatchNorm from random weights: the averaged running statistics do "
                    "not fit the averaged weights (measured: constant predictions); set model.norm=group", run_name)
    failed = read_attempts(run_dir)
    while True:
        attempt = len(failed)
        rule = TakeoffRule.of(config.train) if attempt < config.train.takeoff_restarts else None
        outcome = _train_attempt(config, run_name, train_ids, val_ids, stop, attempt, rule, failed)
        if not isinstance(outcome, NoTakeOff):
            return outcome
        failed = failed + [{"attempt": attempt, "seed": attempt_seed(config.seed, attempt),
                            "epoch": outcome.epoch, "loss_ratio": outcome.ratio}]
        log.warning("%s: attempt %d did not take off (%s); restarting from seed %d", run_name, attempt,
                    outcome, attempt_seed(config.seed, attempt + 1))
        if distributed.current().is_main:
            record_failure(run_dir, failed)
        distributed.current().barrier()


def _train_attempt(config: JobConfig, run_name: str, train_ids: list[str], val_ids: list[str],
                   stop: StopRequest | None, attempt: int, rule: TakeoffRule | None,
                   failed: list[dict[str, Any]]) -> dict[str, Any] | NoTakeOff:
    """One attempt of a run (attempt 0 is the job's seed; see :mod:`idhhpc.train.takeoff`)."""
    work = WorkDir(config.work_dir)
    run_dir = work.checkpoints(run_name)
    config_hash = checkpoint_identity(config, train_ids, val_ids, attempt)  # before the memory plan
    if attempt:
        config = config.model_copy(update={"seed": attempt_seed(config.seed, attempt)})
    network, train_ds, val_ds = training_inputs(config, train_ids, val_ids)  # from the feature cache if usable
    config = fit_to_memory_budget(config, network, train_ds)
    restart = _made_by_other_config(work.last_checkpoint(run_name), config_hash)
    common = dict(config_hash=config_hash, stop=stop, restart=restart, seed=config.seed, takeoff=rule)
    if not distributed.current().is_main:
        try:
            train(network, train_ds, val_ds, config.train, run_dir, **common)
        except NoTakeOff as no_takeoff:
            return no_takeoff
        return {}
    identity, patients = training_identity(run_name), {"train": train_ids, "val": val_ids}
    with stage_run(config, run_name, **identity, patients=patients) as run:
        try:
            result = train(network, train_ds, val_ds, config.train, run_dir,
                           on_epoch_end=epoch_logger(run, config, identity["role"]), **common)
        except NoTakeOff as no_takeoff:  # a finished decision, not a failure: the next attempt follows
            run.set_tags({"idhhpc.takeoff": f"attempt {attempt} abandoned: {no_takeoff}"})
            return no_takeoff
        selection = _selection(config, run_name, result)
        selection["takeoff"] = {"attempts": attempt + 1, "failed": failed, "seed": config.seed}
        locator = _trained_locator(config, identity["role"], train_ids)
        atomic_write_json(work.selection(run_name), selection)
        export_model(config, result, selection, work.exported_model(run_name), locator)
        save_resolved(config, work.trained_config(run_name))  # what trained: as the run's MLflow params say
        run.log_metrics({"val/best_auc": selection["val_auc"], "val/threshold": selection["threshold"],
                         "val/temperature": selection["temperature"], "best_epoch": selection["best_epoch"]})
        run.log_artifact(work.selection(run_name))
        run.log_artifact(work.trained_config(run_name))
        run.log_artifact(work.exported_model(run_name), "model")
        log_training_figure(run, result.history, run_dir)
    return selection


def _made_by_other_config(last: Path, config_hash: str) -> bool:
    """A ``last.pt`` left by a different configuration is not resumed: the run starts afresh."""
    if not last.is_file():
        return False
    stale = checkpoint_of(last, config_hash) is None
    if stale:
        log.warning("%s was written for another configuration; training %s from scratch", last, last.parent.name)
    return stale


def _selection(config: JobConfig, run_name: str, result: TrainResult) -> dict[str, Any]:
    """The kept epoch, its validation predictions, their calibration and the threshold on them."""
    best = next((h for h in result.history if h["epoch"] == result.best_epoch), {})
    labels, raw = result.best_val_labels, result.best_val_probs
    temperature = _temperature(config, labels, raw)
    calibrated = apply_temperature(raw, temperature).tolist()
    threshold = choose_threshold(labels, calibrated, config.evaluate.threshold)
    return {"run": run_name, "best_epoch": result.best_epoch, "val_auc": best.get("val/auc", math.nan),
            "threshold": float(threshold), "threshold_method": config.evaluate.threshold,
            "calibration": config.evaluate.calibration, "temperature": temperature,
            "val_nll": {"raw": negative_log_likelihood(labels, raw),
                        "calibrated": negative_log_likelihood(labels, calibrated)},
            "checkpoint": str(result.best_checkpoint), "history": result.history,
            "val": {"patient_ids": result.best_val_patient_ids, "labels": labels, "probs_raw": raw,
                    "probs": calibrated}}


def _temperature(config: JobConfig, labels: list[int], probs: list[float]) -> float:
    if config.evaluate.calibration == "none" or len(set(labels)) < 2:
        return 1.0
    return fit_temperature(labels, probs)


def _trained_locator(config: JobConfig, role: str, train_ids: list[str]) -> dict[str, torch.Tensor] | None:
    """The final fit of a multi-task job also trains the tumour locator on its patients' whole-brain
    cubes (seconds), so the exported model needs no mask; the fold models are scored on expert crops."""
    if role != "fit" or config.model.head != "segment+classify" or not config.preprocess.locator:
        return None
    images, masks = read_locator_views(WorkDir(config.work_dir).index, train_ids)
    log.info("fit: training the tumour locator on %d whole-brain cubes", len(images))
    return train_locator(images, masks, config.seed)


def export_model(config: JobConfig, result: TrainResult, selection: dict[str, Any], path: Path,
                 locator: dict[str, torch.Tensor] | None = None) -> Path:
    """The deployable model: best weights plus everything ``predict`` needs to treat a new
    patient exactly as training did (job config, modalities, threshold chosen on validation).
    Plain tensors and strings only, so it loads with ``torch.load(..., weights_only=True)``."""
    weights = load_checkpoint(result.best_checkpoint)["model"]
    payload = {"format": EXPORT_FORMAT, "version": EXPORT_VERSION, "model": weights,
               "config": config.model_dump_json(), "threshold": selection["threshold"],
               "threshold_method": selection["threshold_method"], "temperature": selection["temperature"],
               "val_auc": selection["val_auc"], "run": selection["run"]}
    if locator is not None:
        payload["locator"] = locator
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path
