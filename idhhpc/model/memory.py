"""Measure what training keeps in memory, and fit a micro-batch to a memory budget.

The planner follows nnU-Net's habit: derive the batch from a memory target instead of asking
the user to guess. Activations kept for backward are counted exactly with
``torch.autograd.graph.saved_tensors_hooks``, so the numbers hold on any device.
"""

from __future__ import annotations

import contextlib
import copy
import logging
from dataclasses import dataclass
from typing import Iterator

import torch
from torch import nn
from torch.utils.data import Dataset

from idhhpc.config import JobConfig
from idhhpc.devices import resolve_amp, resolve_device
from idhhpc.model.parameters import trainable_parameters

log = logging.getLogger(__name__)
GIB = 2**30

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


@dataclass(frozen=True)
class MicroBatchPlan:
    micro_batch: int
    accumulate: int
    static_bytes: int
    per_sample_bytes: int

    def describe(self, budget_bytes: int) -> str:
        return (f"micro-batch {self.micro_batch} x accumulate {self.accumulate}: weights, gradients and AdamW "
                f"{self.static_bytes / GIB:.2f} GiB + {self.per_sample_bytes / GIB:.3f} GiB per sample, "
                f"budget {budget_bytes / GIB:.2f} GiB")


def plan_micro_batch(model: nn.Module, sample: torch.Tensor, effective_batch: int, budget_bytes: int,
                     autocast_dtype: torch.dtype | None = None) -> MicroBatchPlan:
    """Measure a training forward of ``sample`` (one volume, batch 1) and choose the largest
    micro-batch whose training state fits ``budget_bytes``; ``model`` is left exactly as it was.

    Two copies are measured and halved: BatchNorm in training mode refuses a batch of one once
    the maps have shrunk to a voxel.
    """
    state, was_training = copy.deepcopy(model.state_dict()), model.training
    pair = sample.repeat(2, *([1] * (sample.ndim - 1)))
    with torch.random.fork_rng(devices=[sample.device] if sample.device.type == "cuda" else []):
        model.train()
        per_sample = (saved_bytes_for_backward(model, pair, autocast_dtype)
                      + peak_transient_bytes(model, pair, autocast_dtype)) // 2
    model.load_state_dict(state)
    model.train(was_training)
    static = StaticMemory.of(model).total
    micro_batch = largest_micro_batch(budget_bytes, static, per_sample, effective_batch)
    if micro_batch == 0:
        raise ValueError(f"train.memory_budget_gb={budget_bytes / GIB:g}: not even one volume fits (weights, "
                         f"gradients and AdamW {static / GIB:.2f} GiB + {per_sample / GIB:.3f} GiB per sample); "
                         "train fewer stages (model.trainable_stages), use model.activation_checkpointing=true "
                         "or a smaller preprocess.size")
    return MicroBatchPlan(micro_batch, effective_batch // micro_batch, static, per_sample)


def fit_to_memory_budget(config: JobConfig, model: nn.Module, dataset: Dataset) -> JobConfig:
    """``config`` with ``train.micro_batch``/``accumulate`` fitted to ``train.memory_budget_gb``
    (same effective batch), measured on ``dataset``'s first volume, as nnU-Net's planner fits its
    batch to a GPU; unchanged when unset."""
    train = config.train
    if train.memory_budget_gb is None:
        return config
    sample = torch.as_tensor(dataset[0]["image"])[None]
    device = resolve_device(train.device)
    budget = int(train.memory_budget_gb * GIB)
    plan = plan_micro_batch(model.to(device), sample.to(device), train.micro_batch * train.accumulate, budget,
                            resolve_amp(train.amp, device)[0])
    log.info("memory plan: %s", plan.describe(budget))
    return config.model_copy(update={"train": train.model_copy(
        update={"micro_batch": plan.micro_batch, "accumulate": plan.accumulate})})
