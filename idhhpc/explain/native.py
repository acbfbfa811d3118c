"""CAM heatmaps as NIfTI, in the network's 128³ space and optionally in the patient's own grid.

The native copy is what a radiologist opens beside the original scans; the mapping back
(undo resampling, padding and crop) belongs to the preprocessing geometry, so it comes in as a
callable and this module never needs to know how the crop was made.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path
from typing import Callable

import nibabel as nib
import numpy as np

from idhhpc.atomic import atomic_write_bytes

ToNative = Callable[[np.ndarray], nib.Nifti1Image]


def save_cam_nifti(
    cam: np.ndarray,
    out_path_model_space: str | os.PathLike,
    affine_model_space: np.ndarray,
    out_path_native: str | os.PathLike | None = None,
    to_native: ToNative | None = None,
) -> dict[str, Path]:
    """Write the CAM (float32) in model space and, given both a path and a mapping, natively.

    ``to_native(cam)`` must return the CAM resampled onto the patient's original grid, e.g.
    ``lambda v: geometry.to_native(v, patient_geometry, order=1)``. Returns the written paths
    under the keys ``"model"`` and ``"native"``.
    """
    if (out_path_native is None) != (to_native is None):
        raise ValueError("save_cam_nifti: out_path_native and to_native must be given together")
    cam = np.asarray(cam, dtype=np.float32)
    written = {"model": _write_nifti(nib.Nifti1Image(cam, np.asarray(affine_model_space, float)),
                                     out_path_model_space)}
    if to_native is not None:
        native = to_native(cam)
        data = np.clip(np.asarray(native.dataobj, dtype=np.float32), 0.0, 1.0)
        written["native"] = _write_nifti(nib.Nifti1Image(data, native.affine, native.header), out_path_native)
    return written


def _write_nifti(image: nib.Nifti1Image, path: str | os.PathLike) -> Path:
    """nibabel picks the format from the file name, so serialise to bytes for an atomic rename."""
    path = Path(path)
    if not path.name.endswith((".nii", ".nii.gz")):
        raise ValueError(f"NIfTI path must end in .nii or .nii.gz: {path}")
    image.set_data_dtype(np.float32)
    image.header.set_intent("estimate", name="Grad-CAM")
    data = image.to_bytes()
    atomic_write_bytes(path, gzip.compress(data, compresslevel=6, mtime=0) if path.suffix == ".gz" else data)
    return path
