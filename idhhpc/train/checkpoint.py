"""Checkpoints that hold everything needed for a bitwise-exact resume, readable with weights_only.

Only tensors, numbers, strings, lists and dicts go in, so ``torch.load(path, weights_only=True)``
can read them without trusting pickled code.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from idhhpc.atomic import atomic_path

FORMAT_VERSION = 1


@dataclass
class TrainProgress:
    """Where the run stands: position in the epoch plus the bookkeeping of finished epochs."""

    epoch: int = 0
    micro_step: int = 0
    optimizer_step: int = 0
    last_step_lr: float = 0.0
    loss_sum: float = 0.0
    loss_count: int = 0
    segment_loss_sum: float = 0.0
    segment_loss_count: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best_metric: float | None = None
    best_epoch: int = -1
    epochs_without_improvement: int = 0
    best_val: dict[str, list] = field(default_factory=lambda: {"probs": [], "labels": [], "patient_ids": []})
    finished: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainProgress":
        return cls(**data)


def gradient_buffers(model: nn.Module) -> dict[str, torch.Tensor]:
    """Gradients accumulated so far in an unfinished accumulation window (empty between windows)."""
    return {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.grad is not None}


def restore_gradients(model: nn.Module, grads: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    unknown = sorted(set(grads) - set(params))
    if unknown:
        raise KeyError(f"checkpoint holds gradients for parameters the model lacks: {unknown[:5]}")
    for name, param in params.items():
        param.grad = grads[name].to(param.device) if name in grads else None


def save_checkpoint(path: Path, state: dict[str, Any]) -> Path:
    """Write atomically: a preemption during the write leaves the previous checkpoint intact."""
    with atomic_path(path) as tmp:
        torch.save({"format_version": FORMAT_VERSION, **state}, tmp)
    return path


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu", mmap: bool = False) -> dict[str, Any]:
    """A checkpoint of this format; ``mmap`` reads tensors only when touched (a freshness check
    that reads the progress of a large ``last.pt``)."""
    try:
        state = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as error:
        raise RuntimeError(f"cannot read checkpoint {path}: {error}") from error
    if state.get("format_version") != FORMAT_VERSION:
        raise RuntimeError(f"checkpoint {path} has format_version {state.get('format_version')}, expected {FORMAT_VERSION}")
    return state


def is_better(value: float, best: float | None, higher_is_better: bool) -> bool:
    """NaN never improves on a number; the first value (even NaN) always sets the best."""
    if best is None:
        return True
    if math.isnan(value):
        return False
    if math.isnan(best):
        return True
    return value > best if higher_is_better else value < best


def higher_is_better(metric: str) -> bool:
    """Loss-like metrics are minimised; everything else (AUC, accuracy, F1) is maximised."""
    return not metric.rsplit("/", 1)[-1].endswith("loss")
