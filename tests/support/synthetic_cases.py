"""Tiny synthetic UCSF-PDGM-like patients written with nibabel, for the data tests."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from idhhpc.constants import MODALITIES
from idhhpc.data.cases import CaseFiles

LPS_AFFINE = np.array([[-1.0, 0, 0, 40], [0, -1.0, 0, 36], [0, 0, 1.0, -10], [0, 0, 0, 1]])
RAS_AFFINE = np.array([[1.0, 0, 0, -20], [0, 1.0, 0, -18], [0, 0, 1.0, -10], [0, 0, 0, 1]])


def synthetic_arrays(shape=(40, 36, 30), seed: int = 0) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Four modalities inside an off-centre ellipsoid brain, with a labelled tumor blob."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1).astype(float)
    centre = np.array(shape) * np.array([0.45, 0.55, 0.5])
    radii = np.array(shape) * np.array([0.33, 0.38, 0.36])
    brain = (((grid - centre) / radii) ** 2).sum(-1) <= 1.0
    tumor_centre = centre + np.array([3.0, -2.0, 1.0])
    dist = np.linalg.norm(grid - tumor_centre, axis=-1)
    tumor = np.zeros(shape, np.uint8)
    tumor[(dist <= 6) & brain] = 2
    tumor[(dist <= 4) & brain] = 4
    tumor[(dist <= 2) & brain] = 1
    images = []
    for k in range(4):
        base = 300 + 100 * k + 40 * grid[..., 0] / shape[0] + 200 * (tumor > 0) * (1 if k % 2 else -1)
        noisy = base + rng.normal(0, 10, shape)
        images.append(np.where(brain, noisy, 0).astype(np.float32))
    return images, brain.astype(np.uint8), tumor


def write_case(root: Path, patient_id: str = "UCSF-PDGM-0004", affine: np.ndarray = RAS_AFFINE,
               shape=(40, 36, 30), seed: int = 0, label: int | None = 1,
               with_brain: bool = True, with_tumor: bool = True) -> CaseFiles:
    """Write the UCSF-PDGM folder layout and return the matching CaseFiles."""
    folder = Path(root) / f"{patient_id}_nifti"
    folder.mkdir(parents=True, exist_ok=True)
    images, brain, tumor = synthetic_arrays(shape, seed)
    paths = {}
    for name, data in zip(MODALITIES, images):
        paths[name] = folder / f"{patient_id}_{name}.nii.gz"
        nib.save(nib.Nifti1Image(data, affine), paths[name])
    brain_path = folder / f"{patient_id}_brain_segmentation.nii.gz"
    tumor_path = folder / f"{patient_id}_tumor_segmentation.nii.gz"
    nib.save(nib.Nifti1Image(brain, affine), brain_path)
    nib.save(nib.Nifti1Image(tumor, affine), tumor_path)
    return CaseFiles(patient_id, label, paths, brain_path if with_brain else None,
                     tumor_path if with_tumor else None)
