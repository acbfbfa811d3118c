"""Tiny UCSF-PDGM-shaped folders for ingestion tests: real file names, 8³ volumes."""

from __future__ import annotations

import csv
from pathlib import Path

import nibabel as nib
import numpy as np

COLUMNS = ["ID", "Sex", "Age at MRI", "WHO CNS Grade", "Final pathologic diagnosis (WHO 2021)", "MGMT status",
           "MGMT index", "1p/19q", "IDH", "1-dead 0-alive", "OS", "EOR", "Biopsy prior to imaging", "BraTS21 ID",
           "BraTS21 Segmentation Cohort", "BraTS21 MGMT Cohort"]


def write_volume(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, np.eye(4) if affine is None else affine), path)
    return path


def write_patient(root: Path, folder_id: str, contrast: str = "T1c", shape=(8, 8, 8), skip: tuple[str, ...] = (),
                  bias: bool = False) -> Path:
    folder = root / f"{folder_id}_nifti"
    rng = np.random.default_rng(abs(hash(folder_id)) % 2**32)
    for modality in ("FLAIR", "T1", contrast, "T2"):
        if modality in skip:
            continue
        write_volume(folder / f"{folder_id}_{modality}.nii.gz", rng.random(shape, dtype=np.float32) + 1)
        if bias:
            write_volume(folder / f"{folder_id}_{modality}_bias.nii.gz", rng.random(shape, dtype=np.float32) + 1)
    write_volume(folder / f"{folder_id}_brain_segmentation.nii.gz", np.ones(shape, np.uint8))
    tumor = np.zeros(shape, np.uint8)
    tumor[3:5, 3:5, 3:5] = 2
    write_volume(folder / f"{folder_id}_tumor_segmentation.nii.gz", tumor)
    return folder


def write_metadata(root: Path, rows: list[tuple[str, str]], name: str = "UCSF-PDGM-metadata_v2.csv") -> Path:
    path = root / name
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        for row_id, idh in rows:
            diagnosis = "Glioblastoma, IDH-wildtype" if idh == "wildtype" else "Astrocytoma, IDH-mutant"
            writer.writerow({c: "" for c in COLUMNS} | {"ID": row_id, "IDH": idh, "Final pathologic diagnosis (WHO 2021)": diagnosis})
    return path
