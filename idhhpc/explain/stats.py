"""How much of a CAM falls on the tumor, compared with what chance would give.

The tumor segmentation is used here and only here: it never reaches the model, it only
judges where the model looked. Every measure comes with its chance level (a CAM spread
uniformly over the brain, a peak dropped at a random brain voxel), because a large tumor
makes "energy in tumor" look good for any CAM.
"""

from __future__ import annotations

from typing import Iterable, Mapping

import numpy as np
from scipy import ndimage

from idhhpc.constants import CLASS_NAMES, TUMOR_SUBREGIONS

STATISTIC_KEYS = (
    "energy_in_tumor",
    *(f"energy_in_{name}" for name in TUMOR_SUBREGIONS),
    "pointing_game",
    "chance_energy_in_tumor",
    *(f"chance_energy_in_{name}" for name in TUMOR_SUBREGIONS),
    "chance_pointing_game",
)


def cam_statistics(
    cam: np.ndarray, tumor_labels: np.ndarray, brain_mask: np.ndarray, dilation: int = 3
) -> dict[str, float]:
    """CAM energy inside the tumor (and its sub-regions), pointing game and their chance levels.

    The brain is taken as ``brain_mask | tumor`` so that a tumor voxel the brain mask missed still
    counts and every energy stays in [0, 1]. With no tumor, or a CAM that is zero in the brain,
    the undefined values are NaN instead of an error or a division warning. The pointing game
    uses the global CAM peak (a peak outside the brain is a miss).
    """
    _check_shapes(cam=cam, tumor_labels=tumor_labels, brain_mask=brain_mask)
    tumor = tumor_labels > 0
    if not tumor.any():
        return {key: float("nan") for key in STATISTIC_KEYS}
    brain = (brain_mask > 0) | tumor
    dilated = _dilate(tumor, dilation) & brain
    cam_in_brain = float(cam[brain].sum())
    stats = {"energy_in_tumor": _ratio(float(cam[tumor].sum()), cam_in_brain)}
    for name, label in TUMOR_SUBREGIONS.items():
        region = tumor_labels == label
        stats[f"energy_in_{name}"] = _ratio(float(cam[region].sum()), cam_in_brain)
        stats[f"chance_energy_in_{name}"] = _ratio(float(region.sum()), float(brain.sum()))
    peak = np.unravel_index(np.argmax(cam), cam.shape)
    stats["pointing_game"] = float(dilated[peak]) if cam[peak] > 0 else float("nan")
    stats["chance_energy_in_tumor"] = _ratio(float(tumor.sum()), float(brain.sum()))
    stats["chance_pointing_game"] = _ratio(float(dilated.sum()), float(brain.sum()))
    return stats


def summarise_cam_statistics(rows: Iterable[Mapping]) -> dict[str, float]:
    """Mean of every statistic overall, per true class and for correct vs wrong predictions.

    Each row holds the keys of :func:`cam_statistics` plus ``label`` (0 wildtype, 1 mutant) and
    ``correct`` (bool). Keys are MLflow metric names: ``cam/energy_in_tumor``,
    ``cam/energy_in_tumor_mutant``, ``cam/pointing_game_wrong``, ... NaNs (cases without tumor)
    are skipped; a group with no finite value is left out rather than logged as NaN.
    """
    rows = list(rows)
    groups = {
        "": rows,
        **{f"_{name}": [r for r in rows if int(r["label"]) == label] for label, name in enumerate(CLASS_NAMES)},
        "_correct": [r for r in rows if bool(r["correct"])],
        "_wrong": [r for r in rows if not bool(r["correct"])],
    }
    summary: dict[str, float] = {}
    for suffix, members in groups.items():
        summary[f"cam/n_cases{suffix}"] = float(len(members))
        for key in STATISTIC_KEYS:
            values = np.array([float(r[key]) for r in members], dtype=np.float64)
            if np.isfinite(values).any():
                summary[f"cam/{key}{suffix}"] = float(np.nanmean(values))
    return summary


def _check_shapes(**arrays: np.ndarray) -> None:
    shapes = {name: np.shape(a) for name, a in arrays.items()}
    if len(set(shapes.values())) != 1:
        raise ValueError(f"CAM statistics need arrays of one shape, got {shapes}")


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator > 0 else float("nan")


def _dilate(mask: np.ndarray, voxels: int) -> np.ndarray:
    if voxels <= 0:
        return mask.copy()
    return ndimage.binary_dilation(mask, iterations=voxels)
