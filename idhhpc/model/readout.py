"""The compartment readout: IDH evidence measured inside the tumour the network segments itself.

Why: on every phantom cohort a logistic regression on compartment statistics (volumes and
intensities per tumour compartment, ``benchmarks/signal_ceiling.py``) beat the deep IDH head on
the same folds; a deep head fitted to a hundred patients has too many ways to overfit, a linear
model on a few dozen measured numbers has few. The multi-task network already segments the
compartments, so it can take those measurements itself, with no mask at inference: soft
volumes, means and spreads of every channel under each predicted compartment (probabilities,
so the measurement is smooth in the segmentation), standardised with running statistics and
read by one linear layer whose logits add to the deep head's.

In training the probabilities are detached: the decoder learns the compartments from the masks
alone and the IDH loss only teaches the readout how to weigh what it measures (so the
segmentation is not bent towards whatever separates the training patients). In evaluation the
graph is kept, for Grad-CAM.
"""

from __future__ import annotations

import torch
from torch import nn

from idhhpc.constants import EDEMA, TUMOR_LABELS

_EPS = 1e-6
THRESHOLDS = (-1.0, 0.0, 1.0, 2.0)
"""Brain-normalised intensities (z units) at which the readout measures the share of the whole
tumour and of its core above them: the histogram's shape, which tells enhancement, necrosis and
T2-FLAIR mismatch apart even where a small compartment is not yet segmented."""
_SOFTNESS = 0.25


def region_weights(segment_logits: torch.Tensor) -> torch.Tensor:
    """(B, R, *spatial) soft regions: the whole tumour, each compartment, and the core (not edema)."""
    p = torch.softmax(segment_logits.float(), dim=1)
    compartments = p[:, 1:]
    core = p[:, [i for i, label in enumerate(TUMOR_LABELS) if label not in (0, EDEMA)]].sum(1, keepdim=True)
    return torch.cat([1.0 - p[:, :1], compartments, core], dim=1)


def compartment_statistics(image: torch.Tensor, segment_logits: torch.Tensor) -> torch.Tensor:
    """One row per patient (:func:`statistic_count` columns): log soft volumes; per region and
    channel the soft mean and std; per channel pair the correlation inside the whole tumour; and
    per channel the share of the whole tumour and of its core above each of :data:`THRESHOLDS`."""
    weights = region_weights(segment_logits).flatten(2)
    values = image.float().flatten(2)
    mass = weights.sum(-1)
    denom = mass.clamp_min(_EPS)[..., None]
    mean = torch.einsum("brv,bcv->brc", weights, values) / denom
    square = torch.einsum("brv,bcv->brc", weights, values * values) / denom
    std = (square - mean * mean).clamp_min(0.0).add(_EPS).sqrt()
    whole = weights[:, 0]
    centred = (values - mean[:, 0, :, None]) / std[:, 0, :, None]
    pairs = torch.triu_indices(values.shape[1], values.shape[1], offset=1, device=values.device)
    correlation = torch.einsum("bv,bcv,bdv->bcd", whole, centred, centred) / denom[:, :1]
    above = torch.stack([torch.sigmoid((values - t) / _SOFTNESS) for t in THRESHOLDS], dim=2)  # B, C, T, V
    shares = torch.einsum("brv,bctv->brct", weights[:, [0, -1]], above) / denom[:, [0, -1], :, None]
    return torch.cat([torch.log1p(mass), mean.flatten(1), std.flatten(1),
                      correlation[:, pairs[0], pairs[1]], shares.flatten(1)], dim=1)


def statistic_count(channels: int) -> int:
    regions = len(TUMOR_LABELS) + 1
    return regions * (1 + 2 * channels) + channels * (channels - 1) // 2 + 2 * channels * len(THRESHOLDS)


class CompartmentReadout(nn.Module):
    """Linear IDH logits on standardised :func:`compartment_statistics`.

    Standardisation uses running statistics in training and evaluation alike (a momentum
    average, seeded by the first batch), never the batch's own: micro-batches of two or eight
    patients give batch moments too noisy to train with, and scoring must not depend on which
    patients share a batch. The linear layer starts at zero, so a new network's logits are the
    deep head's until the readout has learned something.
    """

    def __init__(self, channels: int, num_classes: int = 2, momentum: float = 0.05) -> None:
        super().__init__()
        size = statistic_count(channels)
        self.momentum = momentum
        self.linear = nn.Linear(size, num_classes)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)
        self.register_buffer("running_mean", torch.zeros(size))
        self.register_buffer("running_var", torch.ones(size))
        self.register_buffer("batches_seen", torch.zeros((), dtype=torch.long))

    def forward(self, image: torch.Tensor, segment_logits: torch.Tensor) -> torch.Tensor:
        """In training the segmentation is detached (see the module's docstring); in evaluation it
        is not, so Grad-CAM's gradient follows the readout's path through the decoder too and
        explains the logits the model gives, not only the deep head's share of them."""
        if self.training:
            segment_logits = segment_logits.detach()
        stats = compartment_statistics(image, segment_logits)
        if self.training:
            with torch.no_grad():
                self._track(stats)
        scaled = (stats - self.running_mean) / (self.running_var + 1e-5).sqrt()
        return self.linear(scaled.to(self.linear.weight.dtype))

    def _track(self, stats: torch.Tensor) -> None:
        mean, var = stats.mean(0), stats.var(0, unbiased=False) if len(stats) > 1 else torch.ones_like(stats[0])
        if int(self.batches_seen) == 0:
            self.running_mean.copy_(mean)
            self.running_var.copy_(var.clamp_min(1e-4))
        else:
            self.running_mean.lerp_(mean, self.momentum)
            self.running_var.lerp_(var.clamp_min(1e-4), self.momentum)
        self.batches_seen += 1
