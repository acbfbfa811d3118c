"""AdamW on the trainable parameters, OneCycle per optimizer step, and the optimizer step itself."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.optim.lr_scheduler import OneCycleLR

from idhhpc.config import TrainConfig
from idhhpc.model.parameters import parameter_groups


def make_optimizer(model: nn.Module, settings: TrainConfig) -> torch.optim.AdamW:
    """AdamW over trainable parameters only; norms and biases get no weight decay."""
    groups = parameter_groups(model, settings.weight_decay, settings.decoder_lr_scale)
    if not groups:
        raise ValueError("make_optimizer: the model has no trainable parameters (all requires_grad=False)")
    return torch.optim.AdamW(groups, lr=settings.max_lr / settings.div_factor)


def optimizer_steps_per_epoch(n_samples: int, micro_batch: int, accumulate: int) -> int:
    """Micro-batches per epoch grouped into windows of ``accumulate``; a partial last window still steps."""
    return math.ceil(math.ceil(n_samples / micro_batch) / accumulate)


def make_scheduler(optimizer: torch.optim.Optimizer, settings: TrainConfig, n_samples: int) -> OneCycleLR:
    steps = optimizer_steps_per_epoch(n_samples, settings.micro_batch, settings.accumulate)
    return OneCycleLR(
        optimizer,
        max_lr=[settings.max_lr * group.get("lr_scale", 1.0) for group in optimizer.param_groups],
        total_steps=settings.epochs * steps,
        pct_start=settings.pct_start,
        div_factor=settings.div_factor,
        final_div_factor=settings.final_div_factor,
    )


def make_scaler(use_scaler: bool, device: torch.device) -> torch.amp.GradScaler | None:
    return torch.amp.GradScaler(device.type) if use_scaler else None


def apply_optimizer_step(optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LRScheduler | None,
                         scaler: torch.amp.GradScaler | None, grad_clip: float | None) -> None:
    """One optimizer step as every training loop here takes it: unscale (fp16), clip, step
    through the scaler when there is one, clear the gradients, advance the one-cycle schedule."""
    if scaler:
        scaler.unscale_(optimizer)
    if grad_clip:
        params = [p for group in optimizer.param_groups for p in group["params"]]
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
    if scaler:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if scheduler is not None:
        scheduler.step()
