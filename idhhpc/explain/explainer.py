"""The explain stage for a set of cases: CAMs, overlays, NIfTI heatmaps, statistics, gallery.

Per case we explain the mutant class (the question the study asks) and, when the model
predicted wildtype, the wildtype class too, so the predicted-class CAM always exists without
computing one CAM twice. The headline statistics (``cam/...`` metrics, gallery) use the first
method's predicted-class CAM; ``cam_statistics.json`` keeps every method and class.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import nibabel as nib
import numpy as np
import torch
from torch import nn

from idhhpc.atomic import atomic_write_json
from idhhpc.constants import (
    CAM_STATISTICS_FILE,
    CLASS_NAMES,
    GALLERY_FILE,
    GALLERY_HTML_FILE,
    MUTANT,
)
from idhhpc.explain.gallery import write_gallery
from idhhpc.explain.gradcam import CamMethod, CamResult, compute_cam, default_cam_layer
from idhhpc.explain.native import save_cam_nifti
from idhhpc.explain.overlay import case_title, save_overlay
from idhhpc.explain.stats import cam_statistics, summarise_cam_statistics
from idhhpc.ids import validate_patient_id
from idhhpc.predictor import predicted_class

FLAIR_CHANNEL = 0
CaseToNative = Callable[[np.ndarray, Mapping], nib.Nifti1Image]


def explain_cases(
    model: nn.Module,
    cases: Iterable[Mapping],
    out_dir: str | os.PathLike,
    threshold: float,
    target_layer: str | None = None,
    methods: Sequence[CamMethod] = ("gradcam",),
    to_native: CaseToNative | None = None,
) -> dict:
    """Explain every case and write ``out_dir/<patient_id>/...``, the galleries and the statistics.

    A case holds ``image`` (C, D, H, W; FLAIR first), ``label`` (0/1 or None), ``patient_id``,
    ``tumor`` (labels 0/1/2/4 or None), ``brain`` (mask or None: non-zero voxels) and optionally
    ``prob`` (the evaluated mutant probability, e.g. after test-time augmentation) and ``affine``
    (model-space affine for the NIfTI). ``to_native(cam, case)`` maps a CAM to the native grid.
    ``target_layer`` None explains the head convolution. Returns the summary metrics, the per-case
    records and the written paths.
    """
    out_dir = Path(out_dir)
    target_layer = target_layer or default_cam_layer(model)
    model.eval()
    records = [_explain_case(model, c, out_dir, threshold, target_layer, methods, to_native) for c in cases]
    summary = summarise_cam_statistics(
        {**r["statistics"], "label": r["label"], "correct": r["correct"]} for r in records if r["label"] is not None)
    galleries = [write_gallery(records, out_dir / GALLERY_HTML_FILE), write_gallery(records, out_dir / GALLERY_FILE)]
    statistics = out_dir / CAM_STATISTICS_FILE
    atomic_write_json(statistics, {"summary": summary, "threshold": threshold, "target_layer": target_layer,
                                   "methods": list(methods), "cases": records})
    return {"summary": summary, "cases": records, "galleries": galleries, "statistics": statistics}


def _explain_case(model: nn.Module, case: Mapping, out_dir: Path, threshold: float, target_layer: str,
                  methods: Sequence[CamMethod], to_native: CaseToNative | None) -> dict:
    patient_id = validate_patient_id(case["patient_id"])
    image = torch.as_tensor(np.asarray(case["image"], dtype=np.float32))
    tumor, brain = _masks(case, image)
    label = _optional_int(case.get("label"))
    cams = []
    for method in methods:
        prob, predicted, results = _cams_for_case(model, image, case.get("prob"), threshold, target_layer, method)
        for result in results:
            stem = f"{_slug(method)}_{CLASS_NAMES[result.class_index]}"
            title = case_title(patient_id, label, prob, threshold, result.class_index, method)
            files = _write_cam_files(result.cam, image, tumor, case, out_dir / patient_id, stem, title, to_native)
            cams.append({"method": method, "class": CLASS_NAMES[result.class_index], "files": files,
                         "statistics": cam_statistics(result.cam, tumor, brain),
                         "predicted_class": result.class_index == predicted})
    headline = next(c for c in cams if c["predicted_class"])
    return {"patient_id": patient_id, "label": label, "prob_mutant": prob, "predicted": predicted,
            "correct": None if label is None else label == predicted, "overlay": headline["files"]["overlay"],
            "statistics": headline["statistics"], "cams": cams}


def _cams_for_case(model: nn.Module, image: torch.Tensor, given_prob: float | None, threshold: float,
                   target_layer: str, method: CamMethod) -> tuple[float, int, list[CamResult]]:
    """The mutant-class CAM, plus the wildtype one when that is the (thresholded) prediction."""
    mutant = compute_cam(model, image, target_layer, MUTANT, method)
    prob = mutant.prob_mutant if given_prob is None else float(given_prob)
    predicted = predicted_class(prob, threshold)
    if predicted == MUTANT:
        return prob, predicted, [mutant]
    return prob, predicted, [mutant, compute_cam(model, image, target_layer, 1 - MUTANT, method)]


def _write_cam_files(cam: np.ndarray, image: torch.Tensor, tumor: np.ndarray, case: Mapping, case_dir: Path,
                     stem: str, title: str, to_native: CaseToNative | None) -> dict[str, str]:
    overlay = save_overlay(case_dir / f"overlay_{stem}.png", image[FLAIR_CHANNEL].numpy(), cam, tumor, title)
    native_path = case_dir / f"cam_{stem}_native.nii.gz" if to_native else None
    mapping = (lambda volume: to_native(volume, case)) if to_native else None
    niftis = save_cam_nifti(cam, case_dir / f"cam_{stem}.nii.gz", case.get("affine", np.eye(4)), native_path, mapping)
    return {"overlay": str(overlay), **{f"nifti_{space}": str(path) for space, path in niftis.items()}}


def _masks(case: Mapping, image: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Tumor labels (zeros when unknown) and brain mask (non-zero voxels of any channel when absent)."""
    shape = tuple(image.shape[1:])
    tumor = np.zeros(shape, np.uint8) if case.get("tumor") is None else np.asarray(case["tumor"], np.uint8)
    brain = (image != 0).any(0).numpy() if case.get("brain") is None else np.asarray(case["brain"]) > 0
    return tumor, brain


def _optional_int(value) -> int | None:
    return None if value is None else int(value)


def _slug(method: str) -> str:
    return method.replace("++", "pp")
