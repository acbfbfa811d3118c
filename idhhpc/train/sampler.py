"""Class-balanced sampling whose order is a pure function of (seed, epoch)."""

from __future__ import annotations

from typing import Sequence

import torch
from torch.utils.data import WeightedRandomSampler

from idhhpc.train.seeding import seeded_generator

SAMPLER_STREAM = 1


def make_sampler(labels: Sequence[int], seed: int, epoch: int, num_samples: int | None = None) -> WeightedRandomSampler:
    """Draw ``num_samples`` (default ``len(labels)``) indices with replacement, each class equally
    likely in expectation.

    The generator is seeded from (seed, epoch), never from the global RNG, so a resumed run
    replays exactly the order an uninterrupted run would have drawn.
    """
    labels_t = torch.as_tensor(list(labels), dtype=torch.long)
    if labels_t.numel() == 0:
        raise ValueError("make_sampler: no labels, the training set is empty")
    counts = torch.bincount(labels_t)
    weights = 1.0 / counts[labels_t].double()
    generator = seeded_generator(seed, SAMPLER_STREAM, epoch)
    return WeightedRandomSampler(weights, num_samples=num_samples or len(labels_t), replacement=True, generator=generator)
