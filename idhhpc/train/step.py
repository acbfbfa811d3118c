"""One training micro-step, as the trainer, the tuning trainable and the benchmark all take it.

A micro-step runs the forward pass under the AMP policy, the loss in float32, and a backward
pass scaled by the size of its accumulation window (so a window's gradient is the mean over its
micro-batches, however short the last window of an epoch is); the step that ends a window
applies the optimizer step (and updates the moving average of the weights, if any). Under DDP
gradients are synchronised only on that last micro-step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from idhhpc.devices import autocast_context
from idhhpc.model.decoder import compartment_classes
from idhhpc.train import distributed
from idhhpc.train.optim import apply_optimizer_step


@dataclass
class Optimization:
    """What one model's training steps need; ``forward_model`` may be the DDP wrapper of the model."""

    forward_model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler | None
    scaler: torch.amp.GradScaler | None
    loss_fn: nn.Module
    device: torch.device
    amp_dtype: torch.dtype | None
    grad_clip: float | None
    memory_format: torch.memory_format = torch.contiguous_format
    average: torch.optim.swa_utils.AveragedModel | None = None
    """The moving average of the weights (``train.ema_decay``), updated after every optimizer step."""
    segment_loss_fn: nn.Module | None = None
    """The multi-task network's segmentation loss (``model.head: segment+classify``), or None."""
    segment_weight: float = 1.0
    segment_losses: list[float] = field(default_factory=list)
    """Segmentation losses of the micro-steps since the trainer last read them (for the epoch's log)."""

    @property
    def learning_rate(self) -> float:
        """The rate the next optimizer step uses (the schedule advances after each step)."""
        return float(self.optimizer.param_groups[0]["lr"])


def accumulation_window(micro_step: int, accumulate: int, steps_per_epoch: int) -> tuple[int, bool]:
    """(micro-batches in the window holding ``micro_step``, whether ``micro_step`` ends it).

    Windows restart every epoch; the last one of an epoch may be short and still steps.
    """
    window_start = (micro_step // accumulate) * accumulate
    done = micro_step + 1
    return min(accumulate, steps_per_epoch - window_start), done % accumulate == 0 or done == steps_per_epoch


def training_step(opt: Optimization, batch: dict[str, Any], window: int, ends_window: bool) -> torch.Tensor:
    """Forward, loss and backward of one micro-batch; the optimizer step when it ends the window.

    Returns the micro-batch's (unscaled, detached) IDH loss; a multi-task step also adds
    ``segment_weight`` x its segmentation loss to what it differentiates, and records that loss
    in ``opt.segment_losses``.
    """
    images = batch["image"].to(opt.device, non_blocking=True, memory_format=opt.memory_format)
    targets = torch.as_tensor(batch["label"], dtype=torch.long).to(opt.device, non_blocking=True)
    segment = opt.segment_loss_fn is not None and "tumor" in batch
    with distributed.no_sync_unless(opt.forward_model, ends_window):
        with autocast_context(opt.device, opt.amp_dtype):
            outputs = opt.forward_model(images, segment=True) if segment else opt.forward_model(images)
        logits = outputs[0] if segment else outputs
        loss = opt.loss_fn(logits.float(), targets)
        total = loss + opt.segment_weight * _segment_loss(opt, outputs[1], batch) if segment else loss
        scaled = total / window
        (opt.scaler.scale(scaled) if opt.scaler else scaled).backward()
    if ends_window:
        apply_optimizer_step(opt.optimizer, opt.scheduler, opt.scaler, opt.grad_clip)
        if opt.average is not None:
            opt.average.update_parameters(opt.forward_model)  # a DDP wrapper's parameters are its module's
    return loss.detach()


def _segment_loss(opt: Optimization, segment_logits: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
    """The segmentation loss over the patients that have a tumour mask (zero, with a graph, if none)."""
    has_mask = torch.as_tensor(batch["has_tumor"], dtype=torch.bool).to(opt.device)
    if not bool(has_mask.any()):
        return segment_logits.float().sum() * 0.0
    target = compartment_classes(batch["tumor"].to(opt.device))[:, None]
    loss = opt.segment_loss_fn(segment_logits.float()[has_mask], target[has_mask])
    opt.segment_losses.append(float(loss.detach()))
    return loss
