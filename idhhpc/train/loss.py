"""Classification losses on logits (B, 2) and integer labels (B,)."""

from __future__ import annotations

import torch
from monai.losses import FocalLoss
from torch import nn

from idhhpc.config import TrainConfig


class SoftmaxFocalLoss(nn.Module):
    """Alpha-balanced softmax focal loss, averaged over samples.

    MONAI 1.6's softmax focal loss weights class 0 by ``1 - alpha`` and every other class by
    ``alpha`` when alpha is a scalar, which is the mutant weighting we want. Its ``mean``
    reduction divides by B×C (the one-hot zeros count too), so we reduce ourselves: sum over
    classes, mean over samples, giving ``mean(-alpha_t (1 - p_t)^gamma log p_t)``.
    """

    def __init__(self, gamma: float = 2.0, alpha: float | None = 0.75) -> None:
        super().__init__()
        self.focal = FocalLoss(to_onehot_y=True, use_softmax=True, gamma=gamma, alpha=alpha, reduction="none")

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        per_class = self.focal(logits.float(), labels.long().view(-1, 1))
        return per_class.sum(dim=1).mean()


def make_loss(settings: TrainConfig) -> nn.Module:
    if settings.loss == "focal":
        return SoftmaxFocalLoss(gamma=settings.focal_gamma, alpha=settings.focal_alpha)
    if settings.loss == "ce":
        return nn.CrossEntropyLoss()
    raise ValueError(f"train.loss must be 'focal' or 'ce', got {settings.loss!r}")
