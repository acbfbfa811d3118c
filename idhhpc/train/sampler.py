"""Class-balanced sampling whose order is a pure function of (seed, epoch), split over ranks."""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch.utils.data import WeightedRandomSampler

from idhhpc.train.seeding import seeded_generator

SAMPLER_STREAM = 1


def make_sampler(labels: Sequence[int], seed: int, epoch: int, num_samples: int | None = None,
                 balanced: bool = True) -> WeightedRandomSampler:
    """Draw ``num_samples`` (default ``len(labels)``) indices with replacement, each class equally
    likely in expectation when ``balanced`` (else each sample equally likely).

    The generator is seeded from (seed, epoch), never from the global RNG, so a resumed run
    replays exactly the order an uninterrupted run would have drawn.
    """
    labels_t = torch.as_tensor(list(labels), dtype=torch.long)
    if labels_t.numel() == 0:
        raise ValueError("make_sampler: no labels, the training set is empty")
    counts = torch.bincount(labels_t)
    weights = 1.0 / counts[labels_t].double() if balanced else torch.ones(len(labels_t), dtype=torch.double)
    generator = seeded_generator(seed, SAMPLER_STREAM, epoch)
    return WeightedRandomSampler(weights, num_samples=num_samples or len(labels_t), replacement=True, generator=generator)


def micro_steps_per_epoch(n_samples: int, micro_batch: int, world_size: int = 1) -> int:
    """Micro-steps of one epoch when ``world_size`` ranks each take ``micro_batch`` samples per step."""
    return math.ceil(n_samples / (micro_batch * world_size))


def epoch_batches(labels: Sequence[int], seed: int, epoch: int, micro_batch: int, world_size: int = 1,
                  rank: int = 0, balanced: bool = True) -> list[list[tuple[int, int]]]:
    """One rank's micro-batches of an epoch as (dataset index, draw position) keys.

    The epoch's global order is drawn from (seed, epoch) as if one process took micro-batches of
    ``micro_batch * world_size``; rank ``r`` takes the ``r``-th contiguous slice of every global
    micro-batch. So ``W`` ranks with micro-batch ``b`` see, step by step, exactly the samples
    (and augmentation draws) that one process with micro-batch ``W * b`` sees, and with one rank
    this is the single-process order. Every micro-batch is full: a trailing batch of one sample
    breaks BatchNorm in training once the feature map has shrunk to a single voxel, and with
    replacement an epoch's length is a convention anyway.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"epoch_batches: rank {rank} is outside a world of {world_size}")
    global_batch = micro_batch * world_size
    draws = micro_steps_per_epoch(len(labels), micro_batch, world_size) * global_batch
    order = list(make_sampler(labels, seed, epoch, num_samples=draws, balanced=balanced))
    keys = [(int(index), draw) for draw, index in enumerate(order)]
    first = rank * micro_batch
    return [keys[start + first:start + first + micro_batch] for start in range(0, draws, global_batch)]
