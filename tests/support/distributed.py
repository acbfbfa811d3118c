"""Run the training engine on several CPU ranks (gloo) for tests and demos: spawned on 127.0.0.1,
or as the tasks of a submitit job on one node or several.

``fit_toy`` is the whole fit as one rank sees it; it is a module-level function so that
``torch.multiprocessing.spawn``, submitit's local executor and Slurm can all pickle it.
"""

from __future__ import annotations

import datetime
import os
import pickle
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from idhhpc.config import TrainConfig
from idhhpc.train import distributed
from idhhpc.train.stopping import StopRequest, TrainingInterrupted
from idhhpc.train.trainer import train
from tests.support.toy import InMemoryDataset, make_toy_dataset


class FrozenPrefixNet(nn.Module):
    """IDHNet's shape in miniature: a frozen conv + BatchNorm prefix run under ``no_grad`` in eval
    mode, then a trainable conv and linear head without BatchNorm.

    Trainable BatchNorm would normalise each rank's micro-batch on its own statistics, which no
    single process reproduces (SyncBatchNorm needs GPUs), so the head has none: then W ranks at
    micro-batch b compute what one process at micro-batch W·b computes, up to float rounding.
    """

    def __init__(self, width: int = 8, dropout: float = 0.0) -> None:
        super().__init__()
        self.prefix = nn.Sequential(nn.Conv3d(4, width, 3, padding=1), nn.BatchNorm3d(width), nn.ReLU())
        self.prefix.requires_grad_(False)
        self.body = nn.Sequential(nn.Conv3d(width, width, 3, stride=2, padding=1), nn.ReLU(),
                                  nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Dropout(dropout))
        self.head = nn.Linear(width, 2)
        self.train()

    def train(self, mode: bool = True) -> "FrozenPrefixNet":
        super().train(mode)
        self.prefix.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            x = self.prefix(x)
        return self.head(self.body(x))


@dataclass
class ToyFit:
    """What a rank saw: its place (and under Slurm its node and the rendezvous host it was given),
    the history, where it was interrupted, how often it reported an epoch."""

    rank: int
    world_size: int
    node: str = ""
    master_addr: str = ""
    history: list[dict[str, Any]] = field(default_factory=list)
    interrupted_at: tuple[int, int] | None = None
    epoch_callbacks: int = 0
    rank_checksums: list[float] = field(default_factory=list)


def _outcome(context: distributed.Distributed) -> ToyFit:
    return ToyFit(context.rank, context.world_size, os.environ.get("SLURMD_NODENAME", ""),
                  os.environ.get("MASTER_ADDR", ""))


def build_toy_model(name: str) -> nn.Module:
    """``frozen-prefix`` (:class:`FrozenPrefixNet`) or ``idhnet-b0``: the project's network with its
    last stage and head trainable, whose trainable BatchNorm makes ranks differ from one process."""
    if name == "frozen-prefix":
        return FrozenPrefixNet()
    if name == "idhnet-b0":
        from idhhpc.model.network import build_model

        return build_model(variant="b0", dropout=0.0, trainable_stages=1)
    raise ValueError(f"unknown toy model {name!r}; use 'frozen-prefix' or 'idhnet-b0'")


def state_checksum(model: nn.Module) -> float:
    """A float summary of every parameter and buffer: ranks that hold the same model agree on it."""
    return float(sum(t.double().sum() * (i + 1) for i, t in enumerate(model.state_dict().values())))


def toy_data(n_train: int = 13, n_val: int = 9, size: int = 10) -> tuple[InMemoryDataset, InMemoryDataset]:
    """Training data with a learnable signal; validation labels are shuffled so that AUC stays
    away from 1.0 and differences in the predicted probabilities show in it."""
    train_ds = make_toy_dataset(n_train, size=size, seed=1)
    val = make_toy_dataset(n_val, size=size, seed=2, mutant_share=0.5, prefix="VAL")
    shuffled = [val.labels[i] for i in torch.randperm(n_val, generator=torch.Generator().manual_seed(3)).tolist()]
    return train_ds, InMemoryDataset(val.images, shuffled, val.patient_ids)


def fit_toy(run_dir: str, settings: dict[str, Any], stop_at: int | None = None, stop_rank: int = 0,
            init_seed: int = 0, model: str = "frozen-prefix", size: int = 10) -> ToyFit:
    """Train :func:`build_toy_model` ``model`` on the toy data (``size``³ voxels) as this rank.

    ``stop_at`` asks only rank ``stop_rank`` to stop after that many micro-steps; every rank
    must then stop at the same boundary, and the fit is resumed at once from ``last.pt`` with a
    model initialised differently on each rank, so its weights can only come from the file.
    Joins submitit's process group when run as a multi-task submitit job, else uses whatever
    group exists (or none). ``rank_checksums`` holds every rank's :func:`state_checksum` at the end.
    """
    torch.set_num_threads(1)
    with distributed.session() as context:
        outcome = _outcome(context)
        network: nn.Module | None = None

        def count_epoch(epoch: int, metrics: dict) -> None:
            outcome.epoch_callbacks += 1

        def attempt(seed: int, stop: StopRequest | None) -> list[dict[str, Any]]:
            nonlocal network
            torch.manual_seed(seed)
            network = build_toy_model(model)
            train_ds, val_ds = toy_data(size=size)
            return train(network, train_ds, val_ds, TrainConfig(**settings), Path(run_dir),
                         on_epoch_end=count_epoch, stop=stop).history

        if stop_at is not None:
            try:
                attempt(init_seed, StopRequest(at_micro_step=stop_at if context.rank == stop_rank else None))
            except TrainingInterrupted as interrupted:
                outcome.interrupted_at = (interrupted.epoch, interrupted.micro_step)
            init_seed += 100 + context.rank
        outcome.history = attempt(init_seed, None)
        outcome.rank_checksums = context.gather(state_checksum(network))
    return outcome


def _rank_main(rank: int, world_size: int, port: int, out_dir: str, jobs: list[dict[str, Any]]) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank))
    dist.init_process_group("gloo", rank=rank, world_size=world_size, timeout=datetime.timedelta(minutes=5))
    try:
        outcomes = [fit_toy(**job) for job in jobs]
    finally:
        distributed.close_process_group()
    (Path(out_dir) / f"rank-{rank}.pkl").write_bytes(pickle.dumps(outcomes))


def spawn_toy_fits(world_size: int, out_dir: Path, port: int, jobs: list[dict[str, Any]]) -> list[list[ToyFit]]:
    """Run :func:`fit_toy` for each of ``jobs`` (its keyword arguments), one after another, on
    ``world_size`` gloo ranks in fresh processes (imports cost seconds, so the jobs share them).
    Returns, per job, every rank's outcome."""
    out_dir.mkdir(parents=True, exist_ok=True)
    mp.spawn(_rank_main, args=(world_size, port, str(out_dir), jobs), nprocs=world_size, join=True)
    per_rank = [pickle.loads((out_dir / f"rank-{rank}.pkl").read_bytes()) for rank in range(world_size)]
    return [list(outcomes) for outcomes in zip(*per_rank)]


def fit_toy_until_preempted(run_dir: str, settings: dict[str, Any], started_marker: str, epoch_pause_s: float,
                            stop: StopRequest) -> ToyFit:
    """:func:`fit_toy` for :class:`~idhhpc.train.preemption.TrainingJob`: it passes ``stop``.

    Rank 0 writes ``started_marker`` after the first epoch of the first attempt and pauses
    ``epoch_pause_s`` after every epoch (the other ranks wait for it at the next collective),
    so a test has time to send the preemption signal mid-run.
    """
    torch.set_num_threads(1)
    with distributed.session() as context:
        outcome = _outcome(context)

        def mark_and_pause(epoch: int, metrics: dict) -> None:
            outcome.epoch_callbacks += 1
            marker = Path(started_marker)
            if not marker.exists():
                marker.write_text(str(epoch))
            time.sleep(epoch_pause_s)

        torch.manual_seed(0)
        train_ds, val_ds = toy_data()
        outcome.history = train(FrozenPrefixNet(), train_ds, val_ds, TrainConfig(**settings), Path(run_dir),
                                on_epoch_end=mark_and_pause, stop=stop).history
    return outcome
