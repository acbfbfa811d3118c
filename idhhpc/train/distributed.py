"""Data-parallel training over the tasks of one submitit job (one task per GPU, or CPU tasks with gloo).

The trainer asks :func:`current` where it stands; a world of one is the plain single-process
path, untouched. With several ranks every rank runs the same loop in lockstep: each takes its
slice of the same class-balanced stream (:func:`idhhpc.train.sampler.epoch_batches`), DDP
averages gradients at the end of each accumulation window, validation is split over ranks and
gathered, and only rank 0 writes checkpoints and reports epochs while the others wait.
"""

from __future__ import annotations

import contextlib
import datetime
import gc
import logging
import os
from dataclasses import dataclass
from typing import Any, Iterator

import submitit
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from idhhpc.train.validation import ValidationResult, roc_auc_or_nan

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = datetime.timedelta(minutes=30)


@dataclass(frozen=True)
class Distributed:
    """This process's place in the job; the default is a world of one, where every collective is a no-op."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def any(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is true on any rank (e.g. a stop request)."""
        if not self.enabled:
            return flag
        value = torch.tensor([int(flag)], device=_collective_device())
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    def mean(self, value: float) -> float:
        if not self.enabled:
            return value
        tensor = torch.tensor([value], dtype=torch.float64, device=_collective_device())
        dist.all_reduce(tensor)
        return float(tensor.item()) / self.world_size

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order, on every rank."""
        if not self.enabled:
            return [obj]
        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, obj)
        return gathered

    def average_gradients(self, model: nn.Module) -> None:
        """Replace each rank's partial gradients by their mean across ranks.

        Inside an accumulation window DDP has not synchronised yet (``no_sync``), so ranks hold
        different partial sums. Averaging them before rank 0 saves ``last.pt`` lets every rank
        resume from one file: DDP's average at the window's end then gives the same total.
        """
        if not self.enabled:
            return
        for param in model.parameters():
            if param.grad is not None:
                dist.all_reduce(param.grad)
                param.grad.div_(self.world_size)

    def broadcast_buffers(self, model: nn.Module) -> None:
        """Give every rank rank 0's buffers (BatchNorm running statistics), the ones it saves."""
        if not self.enabled:
            return
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)


def current() -> Distributed:
    """Where this process stands in an initialised process group (a world of one if there is none)."""
    if not (dist.is_available() and dist.is_initialized()):
        return Distributed()
    return Distributed(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))


def _collective_device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def backend_for_device() -> str:
    return "nccl" if torch.cuda.is_available() else "gloo"


def _submitit_tasks() -> submitit.JobEnvironment | None:
    try:
        env = submitit.JobEnvironment()
    except RuntimeError:
        return None
    return env if env.num_tasks > 1 else None


def is_follower_task() -> bool:
    """True in a task other than the first of a multi-task submitit job (whose rank 0 requeues it)."""
    env = _submitit_tasks()
    return env is not None and env.global_rank > 0


def init_from_submitit(timeout: datetime.timedelta = DEFAULT_TIMEOUT) -> Distributed:
    """Start the process group when this is one of several tasks of a submitit job.

    submitit's ``TorchDistributedEnvironment`` exports MASTER_ADDR/PORT, RANK, WORLD_SIZE and
    LOCAL_RANK (the port is derived from the job id, so every task agrees). On one node the
    master is 127.0.0.1. NCCL on GPUs, each rank on the GPU of its local rank; gloo on CPUs.
    Outside a multi-task job, or when a group already exists, nothing is started.
    """
    if dist.is_available() and dist.is_initialized():
        return current()
    env = _submitit_tasks()
    if env is None:
        return Distributed()
    torch_env = submitit.helpers.TorchDistributedEnvironment()
    if env.num_nodes == 1:
        torch_env.master_addr = "127.0.0.1"
    torch_env.export(set_cuda_visible_devices=False, overwrite=True)
    if torch.cuda.is_available():
        torch.cuda.set_device(torch_env.local_rank % torch.cuda.device_count())
    dist.init_process_group(backend_for_device(), timeout=timeout)
    log.info("rank %d of %d (local %d) joined %s:%s", torch_env.rank, torch_env.world_size, torch_env.local_rank,
             torch_env.master_addr, torch_env.master_port)
    return current()


@contextlib.contextmanager
def session(timeout: datetime.timedelta = DEFAULT_TIMEOUT) -> Iterator[Distributed]:
    """The process group for the duration of a stage; left alone if someone else started it.

    On success every rank waits for the others (rank 0 may still be writing outputs) before the
    group is destroyed; on an error the group is torn down at once, since a barrier would wait
    for ranks that will never arrive.
    """
    owned = not (dist.is_available() and dist.is_initialized())
    context = init_from_submitit(timeout)
    try:
        yield context
        if owned:
            context.barrier()
    finally:
        if owned and context.enabled:
            close_process_group()


def close_process_group() -> None:
    """Destroy the default group once nothing uses it any more.

    DDP wrappers sit in reference cycles, so without a collection they (and the gloo/NCCL group
    their reducer holds) outlive ``destroy_process_group`` until interpreter shutdown, where
    tearing the group down aborts the process now and then ("terminate called without an
    active exception", SIGABRT after the work is done).
    """
    gc.collect()
    dist.destroy_process_group()


def prepare_model(model: nn.Module, context: Distributed, device: torch.device) -> nn.Module:
    """The module the training loop calls: ``model`` itself, or ``model`` wrapped in DDP.

    DDP registers only parameters that require grad, so the frozen prefix (run under
    ``no_grad``) is invisible to it and ``find_unused_parameters`` stays off. On GPUs BatchNorm
    becomes SyncBatchNorm, so trainable BN sees the statistics of the whole global micro-batch
    (as one process would); frozen BN stays in eval mode and never communicates. The state
    dict keys do not change, so checkpoints stay interchangeable with single-process runs.
    """
    if not context.enabled:
        return model
    if device.type == "cuda":
        nn.SyncBatchNorm.convert_sync_batchnorm(model)
        model.train(model.training)
        return DistributedDataParallel(model, device_ids=[device.index if device.index is not None
                                                          else torch.cuda.current_device()])
    return DistributedDataParallel(model)


def no_sync_unless(model: nn.Module, sync: bool) -> contextlib.AbstractContextManager:
    """DDP's ``no_sync`` on micro-steps that do not end an accumulation window."""
    if sync or not isinstance(model, DistributedDataParallel):
        return contextlib.nullcontext()
    return model.no_sync()


def shard_indices(n: int, context: Distributed) -> list[int]:
    """This rank's strided share of ``n`` items (ranks may differ by one item)."""
    return list(range(context.rank, n, context.world_size))


def gather_validation(context: Distributed, indices: list[int], part: ValidationResult | None) -> ValidationResult:
    """The whole validation set's result from each rank's share, in dataset order.

    AUC is not a mean of per-rank AUCs, so probabilities and labels are gathered and the AUC is
    computed once on all of them; the loss is the sample-weighted mean.
    """
    mine = {"indices": indices, "probs": part.probs if part else [], "labels": part.labels if part else [],
            "patient_ids": part.patient_ids if part else [], "loss_sum": part.loss * len(indices) if part else 0.0}
    shares = context.gather(mine)
    rows = []
    for share in shares:
        rows += zip(share["indices"], share["probs"], share["labels"], share["patient_ids"])
    rows.sort(key=lambda row: row[0])
    if not rows:
        raise ValueError("validate: the validation set is empty")
    probs, labels, patient_ids = [r[1] for r in rows], [r[2] for r in rows], [r[3] for r in rows]
    loss = sum(share["loss_sum"] for share in shares) / len(rows)
    return ValidationResult(loss, roc_auc_or_nan(labels, probs), probs, labels, patient_ids)
