"""Validation pass: mutant probabilities, loss and ROC AUC, through the project's one predictor path."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from sklearn.metrics import roc_auc_score
from torch import nn
from torch.utils.data import DataLoader

from idhhpc.evaluate.segmentation import class_indices_to_labels, compartment_dice, mean_dice
from idhhpc.predictor import iter_outputs, prob_mutant


@dataclass
class ValidationResult:
    loss: float
    auc: float
    probs: list[float]
    labels: list[int]
    patient_ids: list[str]
    dice: dict[str, float] = field(default_factory=dict)
    """Mean Dice per compartment of a multi-task network over the patients with a mask (else empty)."""


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
    probs, labels, patient_ids, dice = [], [], [], []
    segment = getattr(model, "segments", False) and _has_masks(loader)
    for logits, masks, batch in iter_outputs(model, loader, device, amp_dtype, memory_format, segment=segment):
        if masks is not None:
            dice += _batch_dice(masks, batch)
        targets = torch.as_tensor(batch["label"], dtype=torch.long, device=device)
        loss_total += float(loss_fn(logits, targets)) * len(targets)
        count += len(targets)
        probs += prob_mutant(logits).cpu().tolist()
        labels += targets.cpu().tolist()
        patient_ids += list(batch["patient_id"])
    if count == 0:
        raise ValueError("validate: the validation set is empty")
    return ValidationResult(loss_total / count, roc_auc_or_nan(labels, probs), probs, labels, patient_ids,
                            mean_dice(dice) if segment else {})


def _has_masks(loader: DataLoader) -> bool:
    """Whether the loader's dataset (possibly a Subset of one) yields tumour masks."""
    dataset = loader.dataset
    while hasattr(dataset, "dataset") and not hasattr(dataset, "with_masks"):
        dataset = dataset.dataset
    return bool(getattr(dataset, "with_masks", False))


def _batch_dice(masks: torch.Tensor, batch: dict) -> list[dict[str, float]]:
    """Per patient with a reference mask: Dice of the most probable compartment per voxel."""
    predicted = class_indices_to_labels(masks.argmax(dim=1).cpu().numpy())
    reference = batch["tumor"].cpu().numpy()
    return [compartment_dice(predicted[i], reference[i]) for i in range(len(predicted)) if bool(batch["has_tumor"][i])]
