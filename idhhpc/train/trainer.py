"""The training loop: balanced sampling, accumulation, AMP, validation, checkpoints, exact resume.

Everything random is keyed rather than drawn from history: the sample order by (seed, epoch),
augmentation by (seed, epoch, index, draw), dropout by (seed, epoch, micro-step). So a run
stopped at any micro-step boundary and resumed from ``last.pt`` replays the same computation
as a run that never stopped (bitwise on CPU).

Under torch.distributed (see :mod:`idhhpc.train.distributed`) the same loop runs on every rank:
rank ``r`` of ``W`` takes its slice of each global micro-batch of ``W * micro_batch`` samples,
DDP averages gradients once per accumulation window, validation is split and gathered, stop
requests are agreed on at every micro-step boundary, and rank 0 alone writes checkpoints.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import resource
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from idhhpc.config import TrainConfig
from idhhpc.constants import BEST_CHECKPOINT, LAST_CHECKPOINT
from idhhpc.data.augment import AugmentedDataset, make_paired_transform, make_train_transform
from idhhpc.devices import resolve_amp, resolve_device
from idhhpc.train import distributed, stopping
from idhhpc.train.averaging import make_weight_average
from idhhpc.train.checkpoint import (
    TrainProgress,
    gradient_buffers,
    higher_is_better,
    is_better,
    load_checkpoint,
    restore_gradients,
    save_checkpoint,
)
from idhhpc.train.distributed import Distributed
from idhhpc.train.loss import make_loss, make_segment_loss
from idhhpc.train.optim import make_optimizer, make_scaler, make_scheduler
from idhhpc.train.sampler import epoch_batches, micro_steps_per_epoch
from idhhpc.train.seeding import (
    capture_rng_state,
    derive_seed,
    restore_rng_state,
    seeded_generator,
)
from idhhpc.train.step import Optimization, accumulation_window, training_step
from idhhpc.train.stopping import StopRequest, TrainingInterrupted
from idhhpc.train.takeoff import TakeoffRule
from idhhpc.train.validation import ValidationResult, validate

DROPOUT_STREAM, LOADER_STREAM, VAL_LOADER_STREAM = 3, 4, 5
LAST_EPOCH = "last"
EpochCallback = Callable[[int, dict], None]
log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    best_checkpoint: Path
    last_checkpoint: Path
    history: list[dict[str, Any]]
    best_epoch: int
    best_val_probs: list[float]
    best_val_labels: list[int]
    best_val_patient_ids: list[str]


@dataclass
class _Run:
    """What stays fixed during one ``train`` call."""

    model: nn.Module
    train_ds: Dataset
    val_ds: Dataset
    labels: list[int]
    settings: TrainConfig
    seed: int
    run_dir: Path
    opt: Optimization
    stop: StopRequest
    config_hash: str
    on_epoch_end: EpochCallback | None
    dist: Distributed
    epoch_started: float = field(default_factory=time.monotonic)  # for the epoch's log line

    @property
    def device(self) -> torch.device:
        return self.opt.device

    @property
    def scored_model(self) -> nn.Module:
        """What validation scores and the kept checkpoint holds: the weights' average, if any."""
        return self.opt.average.module if self.opt.average is not None else self.model

    @property
    def micro_steps_per_epoch(self) -> int:
        return micro_steps_per_epoch(len(self.labels), self.settings.micro_batch, self.dist.world_size)


def train(model: nn.Module, train_ds: Dataset, val_ds: Dataset, settings: TrainConfig, run_dir: Path,
          on_epoch_end: EpochCallback | None = None, config_hash: str = "", stop: StopRequest | None = None,
          restart: bool = False, seed: int = 0, takeoff: TakeoffRule | None = None) -> TrainResult:
    """Train, resuming from ``run_dir/last.pt`` when it exists with the same ``config_hash``.

    ``seed`` keys every random choice (sample order, augmentation, dropout, loader workers).

    ``stop`` (or :func:`idhhpc.train.stopping.request_stop`) makes the loop save ``last.pt``
    at the next micro-step boundary and raise :class:`TrainingInterrupted`. ``restart=True``
    ignores an existing ``last.pt`` instead of resuming from it. ``takeoff`` raises
    :class:`idhhpc.train.takeoff.NoTakeOff` at its check epoch if the training loss has not moved.
    """
    run = _prepare_run(model, train_ds, val_ds, settings, seed, Path(run_dir), on_epoch_end, config_hash, stop)
    progress = TrainProgress() if restart else _resume(run)
    stopping.register(run.stop)
    try:
        while not progress.finished:
            _train_epoch(run, progress)
            _finish_epoch(run, progress)
            if takeoff is not None:
                takeoff.check(progress.history)
    finally:
        stopping.unregister(run.stop)
    return _result(run, progress)


def _prepare_run(model, train_ds, val_ds, settings, seed, run_dir, on_epoch_end, config_hash, stop) -> _Run:
    context = distributed.current()
    device = resolve_device(settings.device)
    amp_dtype, use_scaler = resolve_amp(settings.amp, device)
    model.to(device)
    train_ds = _training_dataset(train_ds, settings, seed)
    optimizer = make_optimizer(model, settings)
    labels = _labels_of(train_ds)
    # ceil(ceil(n / W) / b) == ceil(n / (W * b)): the scheduler counts the steps of the global batch.
    samples_per_rank = math.ceil(len(labels) / context.world_size)
    opt = Optimization(forward_model=distributed.prepare_model(model, context, device), optimizer=optimizer,
                       scheduler=make_scheduler(optimizer, settings, samples_per_rank),
                       scaler=make_scaler(use_scaler, device), loss_fn=make_loss(settings, labels).to(device),
                       device=device,
                       amp_dtype=amp_dtype, grad_clip=settings.grad_clip, memory_format=_input_memory_format(model),
                       average=make_weight_average(model, settings.ema_decay),
                       segment_loss_fn=make_segment_loss() if getattr(model, "segments", False) else None,
                       segment_weight=settings.segment_weight)
    return _Run(model=model, train_ds=train_ds, val_ds=val_ds, labels=labels, settings=settings, seed=seed,
                run_dir=run_dir, opt=opt, stop=stop or StopRequest(), config_hash=config_hash,
                on_epoch_end=on_epoch_end, dist=context)


def _training_dataset(train_ds: Dataset, settings: TrainConfig, seed: int) -> Dataset:
    if isinstance(train_ds, AugmentedDataset) or settings.augment == "off":
        return train_ds
    return AugmentedDataset(train_ds, make_train_transform(seed, settings.augment), seed=seed,
                            paired=make_paired_transform(seed, settings.augment))


def _labels_of(dataset: Dataset) -> list[int]:
    labels = getattr(dataset, "labels", None)
    if labels is None:
        raise TypeError(f"training dataset {type(dataset).__name__} needs a 'labels' property for the balanced sampler")
    return [int(label) for label in labels]


def _input_memory_format(model: nn.Module) -> torch.memory_format:
    """Feed channels_last_3d inputs to a model whose conv weights are channels_last_3d."""
    for param in model.parameters():
        if param.ndim == 5:
            channels_last = param.is_contiguous(memory_format=torch.channels_last_3d) and not param.is_contiguous()
            return torch.channels_last_3d if channels_last else torch.contiguous_format
    return torch.contiguous_format


# --- one epoch of training --------------------------------------------------------------------

def _train_epoch(run: _Run, progress: TrainProgress) -> None:
    if isinstance(run.train_ds, AugmentedDataset):
        run.train_ds.set_epoch(progress.epoch)
    batches = _epoch_batches(run, progress.epoch)
    remaining = batches[progress.micro_step:]
    _stop_if_requested(run, progress)
    if not remaining:
        return
    run.opt.forward_model.train()
    for batch in _train_loader(run, progress.epoch, remaining):
        _micro_step(run, progress, batch)
        _stop_if_requested(run, progress)


def _epoch_batches(run: _Run, epoch: int) -> list[list[tuple[int, int]]]:
    """This rank's micro-batches as (dataset index, draw position) keys; a pure function of (seed, epoch)."""
    return epoch_batches(run.labels, run.seed, epoch, run.settings.micro_batch, run.dist.world_size, run.dist.rank,
                         balanced=run.settings.balance == "sampler")


class _DrawKeyed(Dataset):
    """Passes (index, draw) keys to an AugmentedDataset and the bare index to any other dataset."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset
        self.by_draw = isinstance(dataset, AugmentedDataset)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        return self.dataset[key] if self.by_draw else self.dataset[key[0]]


def _train_loader(run: _Run, epoch: int, batches: list[list[tuple[int, int]]]) -> DataLoader:
    return _loader(run, _DrawKeyed(run.train_ds), dict(batch_sampler=batches),
                   seeded_generator(run.seed, LOADER_STREAM, epoch))


def _loader(run: _Run, dataset: Dataset, batching: dict, generator: torch.Generator) -> DataLoader:
    """A loader whose worker seeds come from ``generator``, so it never draws from the global RNG."""
    return DataLoader(dataset, num_workers=run.settings.num_workers, persistent_workers=False,
                      pin_memory=run.device.type == "cuda", worker_init_fn=_init_worker, generator=generator,
                      **batching)


def _init_worker(worker_id: int) -> None:
    """Workers share one thread each and ignore the preemption signal: only the trainer saves."""
    torch.set_num_threads(1)
    preempt = getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2"), None)
    if preempt is not None:
        try:
            signal.signal(preempt, signal.SIG_IGN)
        except ValueError:
            pass


def _micro_step(run: _Run, progress: TrainProgress, batch: dict) -> None:
    torch.manual_seed(_dropout_seed(run, progress))
    window, ends_window = accumulation_window(progress.micro_step, run.settings.accumulate, run.micro_steps_per_epoch)
    learning_rate = run.opt.learning_rate
    loss = training_step(run.opt, batch, window, ends_window)
    progress.loss_sum += run.dist.mean(float(loss))
    progress.loss_count += 1
    for segment_loss in run.opt.segment_losses:
        progress.segment_loss_sum += segment_loss
        progress.segment_loss_count += 1
    run.opt.segment_losses.clear()
    progress.micro_step += 1
    if ends_window:
        progress.last_step_lr = learning_rate
        progress.optimizer_step += 1
        every = run.settings.checkpoint_every_steps
        if every and progress.optimizer_step % every == 0:
            _save_last(run, progress)


def _dropout_seed(run: _Run, progress: TrainProgress) -> int:
    """Keyed by (seed, epoch, micro-step), and by rank when there are several, so ranks draw different masks."""
    keys = (run.seed, DROPOUT_STREAM, progress.epoch, progress.micro_step)
    return derive_seed(*keys, run.dist.rank) if run.dist.enabled else derive_seed(*keys)


def _stop_if_requested(run: _Run, progress: TrainProgress) -> None:
    global_micro_step = progress.epoch * run.micro_steps_per_epoch + progress.micro_step
    if run.dist.any(run.stop.should_stop(global_micro_step)):
        path = _save_last(run, progress)
        raise TrainingInterrupted(path, progress.epoch, progress.micro_step)


# --- end of epoch: validation, model selection, early stopping -------------------------------

def _finish_epoch(run: _Run, progress: TrainProgress) -> None:
    validation_started = time.monotonic()
    val = _validate(run, progress.epoch)
    metrics = _epoch_metrics(run, progress, val)
    progress.history.append(metrics)
    _update_best(run, progress, metrics, val)
    progress.finished = (progress.epoch + 1 >= run.settings.epochs
                         or progress.epochs_without_improvement >= run.settings.patience)
    progress.epoch += 1
    progress.micro_step, progress.loss_sum, progress.loss_count = 0, 0.0, 0
    progress.segment_loss_sum, progress.segment_loss_count = 0.0, 0
    _save_last(run, progress)
    _log_epoch(run, metrics, validation_started)
    if run.on_epoch_end is not None and run.dist.is_main:
        run.on_epoch_end(metrics["epoch"], dict(metrics))


def _log_epoch(run: _Run, metrics: dict[str, Any], validation_started: float) -> None:
    """One line per epoch in the job's log (rank 0): during a long fit the only progress a user
    sees outside MLflow. Seconds count from the previous epoch's end or the start of this call
    (so the samples/s of an epoch resumed midway reads high: the whole epoch over part of it)."""
    now = time.monotonic()
    train_s, val_s = validation_started - run.epoch_started, now - validation_started
    run.epoch_started = now
    if not run.dist.is_main:
        return
    segmentation = ""
    if "train/segment_loss" in metrics:
        dice = ", ".join(f"{key.removeprefix('val/dice_')} {value:.3f}" for key, value in metrics.items()
                         if key.startswith("val/dice_"))
        segmentation = f", segment loss {metrics['train/segment_loss']:.4f}, val dice {dice}"
    log.info("epoch %d/%d: train loss %.4f, val auc %.4f, val loss %.4f%s, lr %.3g, %.1f s (train %.1f s at "
             "%.1f samples/s, validation and checkpoints %.1f s), peak memory %s", metrics["epoch"] + 1,
             run.settings.epochs, metrics["train/loss"], metrics["val/auc"], metrics["val/loss"], segmentation,
             metrics["lr"], train_s + val_s, train_s, len(run.labels) / max(train_s, 1e-9), val_s,
             _peak_memory(run.device))


def _peak_memory(device: torch.device) -> str:
    """Peak GPU memory of the epoch (then reset), or this process's peak resident memory on CPU."""
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        return f"{peak / 2**30:.2f} GiB (cuda)"
    return f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB (host RSS)"


def _validate(run: _Run, epoch: int) -> ValidationResult:
    if not run.dist.enabled:
        return _validate_on(run, run.val_ds, epoch)
    run.dist.broadcast_buffers(run.scored_model)
    indices = distributed.shard_indices(len(run.val_ds), run.dist)
    part = _validate_on(run, Subset(run.val_ds, indices), epoch) if indices else None
    return distributed.gather_validation(run.dist, indices, part)


def _validate_on(run: _Run, dataset: Dataset, epoch: int) -> ValidationResult:
    """The bare model, not DDP: validation needs no gradient sync, and shards may differ in length.

    Always in float32, whatever the training precision: the threshold and the calibration chosen
    on these probabilities are applied to test and new patients, which are scored in float32.
    """
    batching = dict(batch_size=run.settings.micro_batch, shuffle=False)
    loader = _loader(run, dataset, batching, seeded_generator(run.seed, VAL_LOADER_STREAM, epoch))
    with _flip_scoring_when_it_counts(run, epoch):
        return validate(run.scored_model, loader, run.opt.loss_fn, run.device, None, run.opt.memory_format)


@contextlib.contextmanager
def _flip_scoring_when_it_counts(run: _Run, epoch: int) -> Iterator[None]:
    """Flip-averaged scoring (``model.tta: flips``, 4 passes) only where its predictions are used:
    the last epoch when the job keeps the last epoch (its predictions become the out-of-fold ones,
    the threshold's and the temperature's), every epoch when a validation metric selects one. The
    other epochs' logged validation figures are of the plain pass."""
    model = run.scored_model
    if not getattr(model, "score_flips", False):
        yield
        return
    model.score_flips = run.settings.select_metric != LAST_EPOCH or epoch + 1 >= run.settings.epochs
    try:
        yield
    finally:
        model.score_flips = True


def _epoch_metrics(run: _Run, progress: TrainProgress, val: ValidationResult) -> dict[str, Any]:
    metrics = {
        "epoch": progress.epoch,
        "train/loss": progress.loss_sum / max(progress.loss_count, 1),
        "val/loss": val.loss,
        "val/auc": val.auc,
        "lr": progress.last_step_lr,
        "optimizer_step": progress.optimizer_step,
    }
    if progress.segment_loss_count:
        metrics["train/segment_loss"] = progress.segment_loss_sum / progress.segment_loss_count
    metrics.update({f"val/dice_{name}": value for name, value in val.dice.items()})
    return metrics


def _update_best(run: _Run, progress: TrainProgress, metrics: dict, val: ValidationResult) -> None:
    """Keep the epoch the job selects by: the last one (no choice made on validation patients, so
    their predictions stay honest out-of-fold figures), or the best by a validation metric."""
    name = run.settings.select_metric
    if name != LAST_EPOCH and name not in metrics:
        raise KeyError(f"train.select_metric {name!r} is not an epoch metric; choose one of {sorted(metrics)}")
    value = float(progress.epoch if name == LAST_EPOCH else metrics[name])
    if not is_better(value, progress.best_metric, name == LAST_EPOCH or higher_is_better(name)):
        progress.epochs_without_improvement += 1
        return
    progress.best_metric, progress.best_epoch, progress.epochs_without_improvement = value, progress.epoch, 0
    progress.best_val = {"probs": val.probs, "labels": val.labels, "patient_ids": val.patient_ids}
    if run.dist.is_main:
        save_checkpoint(run.run_dir / BEST_CHECKPOINT, {
            "model": run.scored_model.state_dict(), "epoch": progress.epoch, "metrics": dict(metrics),
            "config_hash": run.config_hash, "settings": _settings_record(run), "best_val": progress.best_val,
        })
    run.dist.barrier()


# --- checkpoint save / restore -----------------------------------------------------------------

def _save_last(run: _Run, progress: TrainProgress) -> Path:
    """Rank 0 writes ``last.pt`` for every rank (mid-window gradients averaged first); the others wait."""
    path = run.run_dir / LAST_CHECKPOINT
    run.dist.average_gradients(run.model)
    if run.dist.is_main:
        _write_last(run, progress, path)
    run.dist.barrier()
    return path


def _write_last(run: _Run, progress: TrainProgress, path: Path) -> Path:
    return save_checkpoint(path, {
        "model": run.model.state_dict(),
        "optimizer": run.opt.optimizer.state_dict(),
        "scheduler": run.opt.scheduler.state_dict(),
        "scaler": run.opt.scaler.state_dict() if run.opt.scaler else {},
        "gradients": gradient_buffers(run.model),
        "average": run.opt.average.state_dict() if run.opt.average is not None else {},
        "rng": capture_rng_state(),
        "progress": progress.to_dict(),
        "config_hash": run.config_hash,
        "settings": _settings_record(run),
    })


def _settings_record(run: _Run) -> dict[str, Any]:
    """The training values beside the weights, as plain JSON types (``weights_only`` loads them)."""
    return {**run.settings.model_dump(mode="json"), "seed": run.seed}


def _resume(run: _Run) -> TrainProgress:
    path = run.run_dir / LAST_CHECKPOINT
    if not path.exists():
        return TrainProgress()
    state = load_checkpoint(path)
    if state["config_hash"] != run.config_hash:
        raise ValueError(f"{path} belongs to config {state['config_hash']!r}, not {run.config_hash!r}: "
                         "use another run_dir, delete the file, or pass restart=True to start afresh")
    run.model.load_state_dict(state["model"])
    run.opt.optimizer.load_state_dict(state["optimizer"])
    run.opt.scheduler.load_state_dict(state["scheduler"])
    if run.opt.scaler and state["scaler"]:
        run.opt.scaler.load_state_dict(state["scaler"])
    restore_gradients(run.model, state["gradients"])
    if run.opt.average is not None:
        run.opt.average.load_state_dict(state["average"])
    restore_rng_state(state["rng"])
    return TrainProgress.from_dict(state["progress"])


def _result(run: _Run, progress: TrainProgress) -> TrainResult:
    return TrainResult(best_checkpoint=run.run_dir / BEST_CHECKPOINT, last_checkpoint=run.run_dir / LAST_CHECKPOINT,
                       history=progress.history, best_epoch=progress.best_epoch,
                       best_val_probs=progress.best_val["probs"], best_val_labels=progress.best_val["labels"],
                       best_val_patient_ids=progress.best_val["patient_ids"])
