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
