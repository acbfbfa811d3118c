"""One new patient through an exported model, treated exactly as the training patients were.

The exported ``model.pt`` carries the job config, so the files are found, checked and
preprocessed with the very functions and settings the cohort and preprocess stages used; any
difference there would change the probability without anyone noticing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from idhhpc.config import JobConfig
from idhhpc.data import ucsf_pdgm
from idhhpc.data.cases import CaseFiles, CaseRejected, PreprocessedCase
from idhhpc.data.cohort import check_headers
from idhhpc.data.preprocess import preprocess_case
from idhhpc.ids import UnsafePatientId, validate_patient_id
from idhhpc.model.network import IDHNet
from idhhpc.stages.preprocess import preprocess_settings
from idhhpc.stages.train import build_network

MODEL_FORMAT = "idhhpc-model"
SUPPORTED_VERSIONS = (1,)
MASK_SUFFIXES = {"brain": "brain_segmentation", "tumor": "tumor_segmentation"}


class InvalidInput(ValueError):
    """A checkpoint or patient folder that cannot be used; the message says which file and why."""


@dataclass(frozen=True)
class ExportedModel:
    config: JobConfig
    weights: dict[str, torch.Tensor]
    threshold: float
    threshold_method: str
    val_auc: float
    run: str


def load_exported(path: Path) -> ExportedModel:
    """Read ``model.pt`` as written by the fit stage's ``export_model`` (tensors and strings only)."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for missing, truncated or foreign files
        raise InvalidInput(f"{path}: not a readable model file ({type(err).__name__}: {err})") from None
    if not isinstance(payload, dict) or payload.get("format") != MODEL_FORMAT:
        raise InvalidInput(f"{path}: not an idhhpc model export (expected format {MODEL_FORMAT!r}; "
                           "use checkpoints/fit/model.pt)")
    if payload.get("version") not in SUPPORTED_VERSIONS:
        raise InvalidInput(f"{path}: model export version {payload.get('version')!r} is not supported")
    config = JobConfig.model_validate_json(payload["config"])
    return ExportedModel(config, payload["model"], float(payload["threshold"]), str(payload["threshold_method"]),
                         float(payload["val_auc"]), str(payload["run"]))


def build_trained_network(exported: ExportedModel, device: torch.device) -> IDHNet:
    """The network of the export with its weights. ``pretrained_2d`` is dropped: the weights replace
    whatever it would load, and its file need not exist where the model is used."""
    config = exported.config
    config = config.model_copy(update={"model": config.model.model_copy(update={"pretrained_2d": None})})
    model = build_network(config)
    model.load_state_dict(exported.weights)
    return model.to(device).eval()


def patient_id_of(folder: Path) -> str:
    """``UCSF-PDGM-0004_nifti`` → ``UCSF-PDGM-0004``; any other folder name is taken as it is."""
    name = Path(folder).resolve().name.removesuffix("_nifti")
    try:
        return validate_patient_id(name)
    except UnsafePatientId as err:
        raise InvalidInput(f"{folder}: folder name does not give a usable patient id: {err}") from None


def find_patient_files(folder: Path, config: JobConfig) -> CaseFiles:
    """The patient's modalities in a UCSF-PDGM folder (``<id>_FLAIR.nii.gz``, ``_T1c``/``_T1gad``...)
    or in a folder of files named by modality (``FLAIR.nii.gz``); headers checked as at ingestion."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InvalidInput(f"{folder}: patient folder not found")
    bias = config.data.use_bias_corrected
    images = {m: _find_image(folder, m, bias) for m in config.data.modalities}
    masks = {kind: ucsf_pdgm.find_optional(folder, f"_{suffix}") or _plain(folder, (suffix,), "")
             for kind, suffix in MASK_SUFFIXES.items()}
    case = CaseFiles(patient_id_of(folder), None, images, brain_mask=masks["brain"], tumor_mask=masks["tumor"])
    problem = check_headers(case, config.preprocess.affine_atol)
    if problem:
        raise InvalidInput(problem)
    return case


def _find_image(folder: Path, modality: str, bias: bool) -> Path:
    path, problem = ucsf_pdgm.find_modality(folder, modality, bias)
    if path is not None:
        return path
    plain = _plain(folder, ucsf_pdgm.MODALITY_ALIASES[modality], "_bias" if bias else "")
    if plain is None:
        raise InvalidInput(problem)
    return plain


def _plain(folder: Path, names: tuple[str, ...], suffix: str) -> Path | None:
    """The one file whose name is exactly a modality or mask name (``T1gad.nii.gz``), if any."""
    wanted = {f"{name}{suffix}.nii.gz".lower() for name in names} | {f"{name}{suffix}.nii".lower() for name in names}
    matches = [p for p in sorted(folder.iterdir()) if p.is_file() and p.name.lower() in wanted]
    return matches[0] if len(matches) == 1 else None


def preprocess_patient(case: CaseFiles, config: JobConfig) -> PreprocessedCase:
    try:
        return preprocess_case(case, preprocess_settings(config))
    except CaseRejected as err:
        raise InvalidInput(f"rejected by preprocessing: {err.reason}") from None


@torch.no_grad()
def mutant_probability(model: torch.nn.Module, image: np.ndarray, device: torch.device) -> float:
    """Same tensor path as evaluation: the float16 cube (as stored in shards) → float32 → softmax."""
    batch = torch.from_numpy(np.asarray(image).astype(np.float32))[None].to(device)
    return float(torch.softmax(model(batch).float(), dim=1)[0, 1].cpu())


def finite_or_none(values: dict[str, Any]) -> dict[str, Any]:
    """NaN is not JSON: statistics that are undefined (no tumor mask) become null."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in values.items()}
