"""The one way a trained network scores volumes: validation, evaluate, predict and Grad-CAM use it.

As nnU-Net's ``nnUNetPredictor`` serves both its validation and its command line, every place
here that turns volumes into P(mutant) goes through :func:`iter_logits` and :func:`prob_mutant`,
and every place that loads a trained model goes through :meth:`Predictor.load`, so the tensor
path of a new patient is provably the one the model was selected and evaluated with.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from idhhpc.config import JobConfig
from idhhpc.constants import MUTANT, TUMOR_LABELS
from idhhpc.devices import autocast_context, resolve_device
from idhhpc.model.locator import Locator
from idhhpc.model.network import build_network

EXPORT_FORMAT = "idhhpc-model"
SUPPORTED_VERSIONS = (1,)


class ModelFileError(ValueError):
    """A file that is not a readable idhhpc model export; the message names the file."""


class NonFiniteProbability(ValueError):
    """A NaN or infinite probability: it has no class (``NaN >= threshold`` would say wildtype)."""


def predicted_labels(probs: Any, threshold: float) -> np.ndarray:
    """MUTANT (1) where ``probs >= threshold``, WILDTYPE (0) below; raises on any non-finite
    probability, so no label is ever attached to one (the one rule ``predict``, the served model,
    evaluation and Grad-CAM apply)."""
    values = np.asarray(probs, dtype=np.float64)
    if not np.isfinite(values).all():
        raise NonFiniteProbability(f"{int(np.size(values) - np.isfinite(values).sum())} of {np.size(values)} "
                                   "probabilities are NaN or infinite: no class can be given")
    return (values >= threshold).astype(np.int64)


def predicted_class(prob: float, threshold: float) -> int:
    """:func:`predicted_labels` of one probability."""
    return int(predicted_labels([prob], threshold)[0])


def prob_mutant(logits: torch.Tensor) -> torch.Tensor:
    """P(mutant) per row of ``logits``: softmax over two classes (sigmoid of a single logit)."""
    logits = logits.float()
    if logits.shape[1] == 1:
        return torch.sigmoid(logits[:, 0])
    return torch.softmax(logits, dim=1)[:, MUTANT]


def iter_logits(model: nn.Module, batches: Iterable[dict[str, Any]], device: torch.device,
                amp_dtype: torch.dtype | None = None,
                memory_format: torch.memory_format = torch.contiguous_format) -> Iterator[tuple[torch.Tensor, dict]]:
    """``(float32 logits, batch)`` for every batch of shard items (``image``, ``label``, ``patient_id``).

    A network with ``score_flips`` (``model.tta: flips``) is scored as the mean of its logits over
    the volume and its flips along each spatial axis; a tail reading cached features never is.
    """
    for logits, _, batch in iter_outputs(model, batches, device, amp_dtype, memory_format):
        yield logits, batch


def iter_outputs(model: nn.Module, batches: Iterable[dict[str, Any]], device: torch.device,
                 amp_dtype: torch.dtype | None = None,
                 memory_format: torch.memory_format = torch.contiguous_format,
                 segment: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor | None, dict]]:
    """``(logits, compartment probabilities or None, batch)``: :func:`iter_logits` plus, with
    ``segment`` and a multi-task network, the softmax of its segmentation (B, 4, *spatial),
    averaged over the same flips (each flipped back first)."""
    flips = getattr(model, "score_flips", False) and not getattr(model, "feature_input", False)
    segment = segment and getattr(model, "segments", False)
    axes = (None, 2, 3, 4) if flips else (None,)
    for batch in batches:
        images = batch["image"].to(device, memory_format=memory_format)
        logits, masks = [], []
        for axis in axes:
            view = images if axis is None else images.flip(axis)
            with autocast_context(device, amp_dtype):
                out = model(view, segment=True) if segment else model(view)
            logits.append((out[0] if segment else out).float())
            if segment:
                probs = torch.softmax(out[1].float(), dim=1)
                masks.append(probs if axis is None else probs.flip(axis))
        yield torch.stack(logits).mean(0), torch.stack(masks).mean(0) if segment else None, batch


@dataclass
class Predictor:
    """A trained network in eval mode, with the job config and threshold it was exported with."""

    model: nn.Module
    device: torch.device
    config: JobConfig
    threshold: float
    threshold_method: str
    val_auc: float
    run: str
    temperature: float = 1.0
    """Temperature scaling fitted on validation; ``threshold`` applies to the calibrated probability."""
    locator: Locator | None = None
    """The multi-task model's tumour locator (:mod:`idhhpc.model.locator`): crops a patient without a mask."""

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "auto") -> "Predictor":
        """Read ``model.pt`` as the fit stage exports it (tensors and strings only: ``weights_only``)."""
        payload = read_export(Path(path))
        config = JobConfig.model_validate_json(payload["config"])
        torch_device = resolve_device(device) if isinstance(device, str) else device
        model = trained_network(config, payload["model"]).to(torch_device).eval()
        locator = Locator(payload["locator"], len(config.data.modalities), torch_device) if "locator" in payload else None
        return cls(model, torch_device, config, float(payload["threshold"]), str(payload["threshold_method"]),
                   float(payload["val_auc"]), str(payload["run"]), float(payload.get("temperature", 1.0)), locator)

    @property
    def segments(self) -> bool:
        return bool(getattr(self.model, "segments", False))

    @torch.no_grad()
    def predict_proba(self, dataset: Dataset, batch_size: int | None = None) -> np.ndarray:
        """P(mutant) for every item of ``dataset``, in dataset order."""
        loader = DataLoader(dataset, batch_size=batch_size or self.config.train.micro_batch, shuffle=False)
        probs = [prob_mutant(logits / self.temperature).cpu()
                 for logits, _ in iter_logits(self.model, loader, self.device)]
        return torch.cat(probs).numpy() if probs else np.zeros(0)

    def predict_image(self, image: np.ndarray) -> float:
        """P(mutant) of one preprocessed (C, S, S, S) volume, as stored in shards (float16 → float32)."""
        return self.predict_with_segmentation(image, segment=False)[0]

    def predict_with_segmentation(self, image: np.ndarray, segment: bool = True) -> tuple[float, np.ndarray | None]:
        """P(mutant) and, from a multi-task network, the tumour label map (0, 1, 2, 4) of the cube."""
        batch = {"image": torch.from_numpy(np.asarray(image).astype(np.float32))[None]}
        with torch.no_grad():
            logits, masks, _ = next(iter_outputs(self.model, [batch], self.device, segment=segment))
        labels = None if masks is None else np.asarray(TUMOR_LABELS, np.uint8)[masks.argmax(1)[0].cpu().numpy()]
        return float(prob_mutant(logits / self.temperature)[0].cpu()), labels


def trained_network(config: JobConfig, weights: dict[str, torch.Tensor]) -> nn.Module:
    """The job's network with ``weights``; pretrained 2D weights are not loaded first, since the
    trained weights replace them and their file need not exist where the model is used."""
    model = build_network(config, load_pretrained=False)
    model.load_state_dict(weights)
    return model


def read_export(path: Path) -> dict[str, Any]:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for missing, truncated or foreign files
        raise ModelFileError(f"{path}: not a readable model file ({type(err).__name__}: {err})") from None
    if not isinstance(payload, dict) or payload.get("format") != EXPORT_FORMAT:
        raise ModelFileError(f"{path}: not an idhhpc model export (expected format {EXPORT_FORMAT!r}; "
                             "use checkpoints/fit/model.pt)")
    if payload.get("version") not in SUPPORTED_VERSIONS:
        raise ModelFileError(f"{path}: model export version {payload.get('version')!r} is not supported")
    return payload
