"""An exponential moving average of the weights, which validation, selection and export use.

With a hundred training patients a fold's validation AUC swings by tenths from one epoch to the
next while the weights wander; the average of the last few hundred steps scores far more steadily
(benchmarks/RESULTS.md, "Learning"). PyTorch's ``AveragedModel`` does the bookkeeping; with
``use_buffers`` the average also carries the buffers, so BatchNorm running statistics are averaged
with the weights, which does not give the statistics of the averaged weights: pair the average with
``model.norm: group`` when training from random weights.
"""

from __future__ import annotations

from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


def make_weight_average(model: nn.Module, decay: float) -> AveragedModel | None:
    """The running average of ``model`` (None when ``decay`` is 0: no averaging)."""
    if not decay:
        return None
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
