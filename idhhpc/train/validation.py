"""Validation pass: mutant probabilities, loss and ROC AUC, through the project's one predictor path."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from sklearn.metrics import roc_auc_score
from torch import nn
from torch.utils.data import DataLoader

from idhhpc.predictor import iter_logits, prob_mutant


@dataclass
class ValidationResult:
    loss: float
    auc: float
    probs: list[float]
    labels: list[int]
    patient_ids: list[str]


def roc_auc_or_nan(labels: list[int], probs: list[float]) -> float:
    """ROC AUC, or NaN when the labels hold one class only (AUC is undefined there)."""
    if len(set(labels)) < 2:
        return math.nan
    return float(roc_auc_score(labels, probs))


@torch.no_grad()
def validate(model: nn.Module, loader: DataLoader, loss_fn: nn.Module, device: torch.device,
             amp_dtype: torch.dtype | None, memory_format: torch.memory_format = torch.contiguous_format) -> ValidationResult:
    model.eval()
    loss_total, count = 0.0, 0
    probs, labels, patient_ids = [], [], []
    for logits, batch in iter_logits(model, loader, device, amp_dtype, memory_format):
        targets = torch.as_tensor(batch["label"], dtype=torch.long, device=device)
        loss_total += float(loss_fn(logits, targets)) * len(targets)
        count += len(targets)
        probs += prob_mutant(logits).cpu().tolist()
        labels += targets.cpu().tolist()
        patient_ids += list(batch["patient_id"])
    if count == 0:
        raise ValueError("validate: the validation set is empty")
    return ValidationResult(loss_total / count, roc_auc_or_nan(labels, probs), probs, labels, patient_ids)
