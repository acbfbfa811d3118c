"""Measure what training keeps in memory, and fit a micro-batch to a memory budget.

The planner follows nnU-Net's habit: derive the batch from a memory target instead of asking
the user to guess. Activations kept for backward are counted exactly with
``torch.autograd.graph.saved_tensors_hooks``, so the numbers hold on any device.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator

import torch
from torch import nn

from idhhpc.model.params import trainable_parameters

ADAMW_STATES_PER_PARAMETER = 2


class SavedTensorCounter:
    """Sum of storage bytes saved for backward, each storage counted once.

    Parameters saved by their own layers are skipped: they are resident anyway and counted as
    parameter memory.
    """

    def __init__(self, model: nn.Module | None = None) -> None:
        self._ignored = {p.untyped_storage().data_ptr() for p in model.parameters()} if model else set()
        self._seen: dict[int, int] = {}

    @property
    def bytes(self) -> int:
        return sum(self._seen.values())

    def _pack(self, tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        pointer = storage.data_ptr()
        if pointer not in self._ignored:
            self._seen[pointer] = max(self._seen.get(pointer, 0), storage.nbytes())
        return tensor

    @contextlib.contextmanager
    def counting(self) -> Iterator[SavedTensorCounter]:
        with torch.autograd.graph.saved_tensors_hooks(self._pack, lambda tensor: tensor):
            yield self


def saved_bytes_for_backward(
    model: nn.Module, inputs: torch.Tensor, autocast_dtype: torch.dtype | None = None
) -> int:
    """Bytes one training forward of ``model`` on ``inputs`` keeps for its backward pass."""
    counter = SavedTensorCounter(model)
    with counter.counting(), _autocast(inputs, autocast_dtype):
        output = model(inputs)
    del output
    return counter.bytes


def peak_transient_bytes(
    model: nn.Module, inputs: torch.Tensor, autocast_dtype: torch.dtype | None = None
) -> int:
    """Input volume plus the largest input+output pair of any single layer in a forward pass.

    Saved tensors miss what the frozen prefix holds only briefly: at 128³ an expanded B7
    block in fp32 BatchNorm outputs is larger than everything the trainable tail saves.
    """
    largest = 0

    def record(_module: nn.Module, args: tuple, output: object) -> None:
        nonlocal largest
        largest = max(largest, _storage_bytes([*args, output]))

    leaves = [m for m in model.modules() if not any(True for _ in m.children())]
    handles = [leaf.register_forward_hook(record) for leaf in leaves]
    try:
        with torch.no_grad(), _autocast(inputs, autocast_dtype):
            model(inputs)
    finally:
        for handle in handles:
            handle.remove()
    return _storage_bytes([inputs]) + largest


def _storage_bytes(values: list) -> int:
    storages = {
        v.untyped_storage().data_ptr(): v.untyped_storage().nbytes()
        for v in values
        if isinstance(v, torch.Tensor)
    }
    return sum(storages.values())


def _autocast(inputs: torch.Tensor, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(inputs.device.type, dtype=dtype)


@dataclass(frozen=True)
class StaticMemory:
    """Memory that does not grow with the batch: weights, gradients and AdamW moments."""

    parameters: int
    gradients: int
    optimizer: int

    @property
    def total(self) -> int:
        return self.parameters + self.gradients + self.optimizer

    @classmethod
    def of(cls, model: nn.Module) -> StaticMemory:
        trainable = sum(p.numel() * p.element_size() for p in trainable_parameters(model))
        return cls(
            parameters=sum(p.numel() * p.element_size() for p in model.parameters()),
            gradients=trainable,
            optimizer=ADAMW_STATES_PER_PARAMETER * trainable,
        )


def largest_micro_batch(
    budget_bytes: int, static_bytes: int, per_sample_bytes: int, effective_batch: int
) -> int:
    """Largest divisor of ``effective_batch`` whose training state fits ``budget_bytes`` (0 if none).

    Divisors keep every accumulation step the same size. ``per_sample_bytes`` should include
    the transient peak (:func:`peak_transient_bytes`) as well as the saved tensors.
    """
    fitting = [
        m
        for m in range(1, effective_batch + 1)
        if effective_batch % m == 0 and static_bytes + m * per_sample_bytes <= budget_bytes
    ]
    return max(fitting, default=0)
