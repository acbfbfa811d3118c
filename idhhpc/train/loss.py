"""Classification losses on logits (B, 2) and integer labels (B,)."""

from __future__ import annotations

from typing import Sequence

import torch
from monai.losses import DiceCELoss, FocalLoss
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


def make_loss(settings: TrainConfig, labels: Sequence[int] = ()) -> nn.Module:
    """The configured loss; with ``balance: loss`` it weights each class by its inverse frequency
    in ``labels`` (the training labels), the one class-balancing mechanism of that setting."""
    weights = _inverse_frequency(labels) if settings.balance == "loss" else None
    if settings.loss == "focal":
        alpha = settings.focal_alpha
        if alpha is None and weights is not None:
            alpha = float(weights[1] / weights.sum())
        return SoftmaxFocalLoss(gamma=settings.focal_gamma, alpha=alpha)
    if settings.loss == "ce":
        return nn.CrossEntropyLoss(weight=weights)
    raise ValueError(f"train.loss must be 'focal' or 'ce', got {settings.loss!r}")


def _inverse_frequency(labels: Sequence[int]) -> torch.Tensor:
    counts = torch.bincount(torch.as_tensor(list(labels), dtype=torch.long), minlength=2).double()
    if len(labels) == 0 or (counts == 0).any():
        raise ValueError("train.balance=loss needs training labels of both classes")
    return (counts.sum() / (2 * counts)).float()


def make_segment_loss() -> nn.Module:
    """Dice + cross-entropy over background and the three compartments (MONAI's DiceCELoss), as
    nnU-Net trains; Dice over the batch, so a small compartment absent from one patient does not
    blow up."""
    return DiceCELoss(to_onehot_y=True, softmax=True, batch=True)
