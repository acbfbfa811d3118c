"""BatchNorm statistics estimated from the data before training a randomly initialised network.

A fresh EfficientNet keeps running statistics (mean 0, variance 1) that match none of its real
activations, and a frozen layer never updates them. In eval mode such a backbone shrinks its
signal by orders of magnitude per stage until every input gives the same logits. Estimating
the statistics once from a few unaugmented training volumes makes the frozen random features
usable and gives validation a sensible starting point. ImageNet-initialised weights carry
their own statistics and are left alone.
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.data import DataLoader, Dataset, Subset

from idhhpc.config import JobConfig
from idhhpc.model.network import IDHNet, build_network


@torch.no_grad()
def calibrate_batchnorm(model: nn.Module, batches: Iterable[torch.Tensor]) -> int:
    """Reset every BatchNorm and re-estimate its statistics as a cumulative average over
    ``batches`` (dropout and drop-connect off); returns the number of samples seen."""
    norms = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    was_training, momenta = model.training, [m.momentum for m in norms]
    model.eval()
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None
        norm.train()
    device = next(model.parameters()).device
    seen = 0
    for batch in batches:
        model(batch.to(device))
        seen += batch.shape[0]
    for norm, momentum in zip(norms, momenta):
        norm.momentum = momentum
    model.train(was_training)
    return seen


def calibrated_network(config: JobConfig, train_ds: Dataset) -> IDHNet:
    """A new network whose BatchNorm statistics come from the first training volumes, unless
    pretrained weights (with their own statistics) were loaded or it has no BatchNorm."""
    model = build_network(config)
    count = min(config.model.calibration_samples, len(train_ds)) if config.model.norm == "batch" else 0
    if not model.initialisation.pretrained and count:
        # drop_last: a lone volume has no batch statistics once the maps shrink to one voxel; the
        # batch is capped at ``count`` so that drop_last never leaves no batch at all
        batches = DataLoader(Subset(train_ds, range(count)), batch_size=max(2, min(config.train.micro_batch, count)),
                             drop_last=count >= 2)
        calibrate_batchnorm(model, (batch["image"] for batch in batches))
    return model
