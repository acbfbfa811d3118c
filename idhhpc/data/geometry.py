"""Where each voxel of a preprocessed size³ cube lies in the patient's scanner space.

Preprocessing reorients to canonical RAS, crops a box, pads it centred to a cube of side L and
resamples L³ → S³ with ``align_corners=False`` semantics, so output voxel ``o`` sits at canonical
voxel ``(o + 0.5) * L / S - 0.5 - pad_before + crop_start``. That chain is one affine map, which
is why both :func:`output_affine` and :func:`to_native` reduce to matrix products.
"""

from __future__ import annotations

from typing import Any

import nibabel as nib
import numpy as np
from scipy import ndimage

GEOMETRY_KEYS = (
    "crop_start", "pad_before", "cube_side", "size", "scale",
    "native_affine", "canonical_affine", "native_shape", "orientation",
)


def make_geometry(
    crop_start: np.ndarray, pad_before: np.ndarray, cube_side: int, size: int,
    native_affine: np.ndarray, canonical_affine: np.ndarray, native_shape: tuple[int, ...],
    orientation: np.ndarray,
) -> dict[str, Any]:
    """Bundle the numbers of one patient's crop-pad-resample chain as HDF5-friendly arrays."""
    return {
        "crop_start": np.asarray(crop_start, dtype=np.int64),
        "pad_before": np.asarray(pad_before, dtype=np.int64),
        "cube_side": np.int64(cube_side),
        "size": np.int64(size),
        "scale": np.float64(cube_side / size),
        "native_affine": np.asarray(native_affine, dtype=np.float64),
        "canonical_affine": np.asarray(canonical_affine, dtype=np.float64),
        "native_shape": np.asarray(native_shape, dtype=np.int64),
        "orientation": np.asarray(orientation, dtype=np.float64),
    }


def output_to_canonical(geometry: dict[str, Any]) -> np.ndarray:
    """4×4 map from output voxel indices to canonical (RAS-reoriented) voxel indices."""
    scale = float(geometry["scale"])
    offset = 0.5 * scale - 0.5 - np.asarray(geometry["pad_before"]) + np.asarray(geometry["crop_start"])
    matrix = np.diag([scale, scale, scale, 1.0])
    matrix[:3, 3] = offset
    return matrix


def output_affine(geometry: dict[str, Any]) -> np.ndarray:
    """4×4 map from output voxel indices to world (scanner) mm, for saving size³ NIfTIs."""
    return np.asarray(geometry["canonical_affine"], dtype=np.float64) @ output_to_canonical(geometry)


def to_native(volume: np.ndarray, geometry: dict[str, Any], order: int = 1) -> nib.Nifti1Image:
    """Resample a size³ volume (heatmap, mask) onto the patient's native grid and affine.

    ``order=0`` keeps labels intact; ``order=1`` suits continuous maps. Voxels outside the
    cropped cube become 0.
    """
    size = int(geometry["size"])
    if volume.shape != (size, size, size):
        raise ValueError(f"to_native expects a {size}³ volume, got shape {volume.shape}")
    native_affine = np.asarray(geometry["native_affine"], dtype=np.float64)
    native_to_output = np.linalg.inv(output_affine(geometry)) @ native_affine
    dtype = volume.dtype if order == 0 else np.float32
    resampled = ndimage.affine_transform(
        volume.astype(dtype, copy=False), native_to_output,
        output_shape=tuple(int(n) for n in geometry["native_shape"]),
        order=order, mode="constant", cval=0.0,
    )
    return nib.Nifti1Image(resampled, native_affine)
