"""Tri-planar PNG of a CAM over FLAIR, through the CAM peak and through the tumor centroid.

Background voxels (exactly 0 after z-scoring inside the brain) are left black rather than drawn
as mid-grey. Arrays are RAS-ordered (axis 0 left→right, 1 posterior→anterior, 2 inferior→superior), as the
preprocessing writes them. Slices are transposed and drawn with ``origin="lower"`` so that the
axial view has anterior up and the patient's right on the viewer's right (neurological
convention, marked with R/L), and coronal/sagittal views have superior up.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from scipy import ndimage

from idhhpc.atomic import atomic_path
from idhhpc.constants import CLASS_NAMES
from idhhpc.predictor import predicted_class

CAM_CMAP = "jet"
CAM_ALPHA = 0.45
CAM_FLOOR = 0.05
_VIEWS = (
    ("axial", 2, ("L", "R", "P", "A")),
    ("coronal", 1, ("L", "R", "I", "S")),
    ("sagittal", 0, ("P", "A", "I", "S")),
)


def save_overlay(
    path: str | os.PathLike,
    flair: np.ndarray,
    cam: np.ndarray,
    tumor_mask: np.ndarray | None,
    title: str,
) -> Path:
    """Write the overlay PNG atomically and return its path.

    Row 1 cuts through the CAM peak; row 2, drawn only when a non-empty tumor mask is given,
    through the tumor centroid, so a CAM that looks away from the tumor is visible at a glance.
    """
    if flair.shape != cam.shape or (tumor_mask is not None and tumor_mask.shape != cam.shape):
        raise ValueError(f"overlay needs one shape: flair {flair.shape}, cam {cam.shape}, "
                         f"tumor {None if tumor_mask is None else tumor_mask.shape}")
    tumor = None if tumor_mask is None or not np.any(tumor_mask) else tumor_mask > 0
    cam = np.where(flair != 0, cam, 0.0)  # preprocessing zeroes everything outside the brain
    centres = {"CAM peak": np.unravel_index(np.argmax(cam), cam.shape)}
    if tumor is not None:
        centres["tumor centroid"] = tuple(int(round(c)) for c in ndimage.center_of_mass(tumor))
    fig = _draw(flair, cam, tumor, centres, title)
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, facecolor="black")
    return path


def _draw(flair: np.ndarray, cam: np.ndarray, tumor: np.ndarray | None, centres: dict, title: str) -> Figure:
    fig = Figure(figsize=(10, 3.3 * len(centres) + 0.5), facecolor="black", layout="constrained")
    axes = fig.subplots(len(centres), 3, squeeze=False)
    window = _intensity_window(flair)
    for row, (label, centre) in zip(axes, centres.items()):
        for ax, (view, axis, letters) in zip(row, _VIEWS):
            index = int(centre[axis])
            _draw_slice(ax, [np.take(a, index, axis=axis) if a is not None else None for a in (flair, cam, tumor)],
                        window, letters)
            ax.set_title(f"{view} {'xyz'[axis]}={index} ({label})", color="white", fontsize=9)
    colorbar = fig.colorbar(ScalarMappable(Normalize(0, 1), CAM_CMAP), ax=axes.ravel().tolist(), shrink=0.8)
    colorbar.set_label("CAM (normalised)", color="white")
    colorbar.ax.tick_params(colors="white")
    fig.suptitle(title, color="white", fontsize=11)
    return fig


def _draw_slice(ax, planes: list, window: tuple[float, float], letters: tuple[str, str, str, str]) -> None:
    flair, cam, tumor = (None if p is None else p.T for p in planes)
    ax.imshow(np.ma.masked_equal(flair, 0), cmap="gray", vmin=window[0], vmax=window[1], origin="lower",
              interpolation="nearest")
    ax.imshow(np.ma.masked_less(cam, CAM_FLOOR), cmap=colormaps[CAM_CMAP], vmin=0, vmax=1, alpha=CAM_ALPHA,
              origin="lower", interpolation="bilinear")
    if tumor is not None and tumor.any():
        ax.contour(tumor.astype(np.float32), levels=[0.5], colors="magenta", linewidths=1.2, origin="lower")
    _label_edges(ax, flair.shape, letters)
    ax.set_axis_off()


def _label_edges(ax, shape: tuple[int, int], letters: tuple[str, str, str, str]) -> None:
    left, right, bottom, top = letters
    rows, cols = shape
    style = {"color": "yellow", "fontsize": 8, "ha": "center", "va": "center"}
    ax.text(2, rows / 2, left, **style)
    ax.text(cols - 3, rows / 2, right, **style)
    ax.text(cols / 2, 2, bottom, **style)
    ax.text(cols / 2, rows - 3, top, **style)


def _intensity_window(flair: np.ndarray) -> tuple[float, float]:
    """Percentiles of the non-background voxels, robust to the z-scored and float16 inputs."""
    values = flair[np.isfinite(flair) & (flair != 0)]
    if values.size == 0:
        return 0.0, 1.0
    low, high = np.percentile(values.astype(np.float32), [1.0, 99.5])
    return float(low), float(max(high, low + 1e-6))


def case_title(patient_id: str, label: int | None, prob_mutant: float, threshold: float,
               explained_class: int, method: str) -> str:
    """Overlay title: who, what the truth is, what the model said and which class is explained."""
    truth = "unknown" if label is None else CLASS_NAMES[int(label)]
    predicted = CLASS_NAMES[predicted_class(prob_mutant, threshold)]
    return (f"{patient_id} | true {truth} | P(mutant)={prob_mutant:.3f} (threshold {threshold:.2f}) "
            f"→ {predicted} | {method} for {CLASS_NAMES[explained_class]}")
