"""Normal brain anatomy for phantoms: the MNI152 1 mm templates shipped with nilearn, on any grid.

The 240x240x155 mm field of view of UCSF-PDGM is mapped onto the requested shape (smaller shapes
are coarser, like a downsampled scan) and centred on the brain, so the affine's origin is the
middle of the volume. Resampling is the slow part of a phantom, so it happens once per shape
and process.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from idhhpc.phantoms.noise import smooth_noise

FIELD_OF_VIEW_MM = (240.0, 240.0, 155.0)
_VESSEL_SEED = 20240501
_MIN_DEPTH_MM = 12.0


@dataclass(frozen=True)
class Anatomy:
    """Tissue fractions and geometry of the template brain on one grid (arrays are read-only)."""

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    affine: np.ndarray
    brain: np.ndarray
    gm: np.ndarray
    wm: np.ndarray
    csf: np.ndarray
    vessels: np.ndarray
    brain_box: tuple[slice, slice, slice]
    tumor_sites: np.ndarray
    frontal_site: np.ndarray


def load_anatomy(shape: tuple[int, int, int]) -> Anatomy:
    """The template brain resampled onto ``shape`` (cached per shape within the process)."""
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 8:
        raise ValueError(f"phantom shape must be three sizes of at least 8 voxels, got {shape}")
    return _load_anatomy(shape)


@functools.lru_cache(maxsize=4)
def _load_anatomy(shape: tuple[int, int, int]) -> Anatomy:
    spacing = tuple(fov / size for fov, size in zip(FIELD_OF_VIEW_MM, shape))
    maps = {name: _resample(image, shape, spacing) for name, image in _templates().items()}
    brain = maps["mask"] > 0.5
    gm = np.where(brain, maps["gm"], 0).astype(np.float32)
    wm = np.where(brain, maps["wm"], 0).astype(np.float32)
    csf = np.where(brain, np.clip(1.0 - gm - wm, 0.0, 1.0), 0).astype(np.float32)
    sites, frontal = _tumor_sites(brain, gm + wm, spacing, shape)
    anatomy = Anatomy(
        shape=shape,
        spacing=spacing,
        affine=_affine(shape, spacing),
        brain=brain,
        gm=gm,
        wm=wm,
        csf=csf,
        vessels=_vessel_network(shape, spacing, csf, brain),
        brain_box=ndimage.find_objects(brain.astype(np.uint8))[0],
        tumor_sites=sites,
        frontal_site=frontal,
    )
    for array in (anatomy.affine, brain, gm, wm, csf, anatomy.vessels, sites, frontal):
        array.setflags(write=False)
    return anatomy


def _affine(shape: tuple[int, ...], spacing: tuple[float, ...]) -> np.ndarray:
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = -(np.asarray(shape) - 1) / 2 * np.asarray(spacing)
    return affine


@functools.lru_cache(maxsize=1)
def _templates() -> dict[str, np.ndarray]:
    from nilearn import datasets

    return {
        "mask": datasets.load_mni152_brain_mask(resolution=1).get_fdata(dtype=np.float32),
        "gm": datasets.load_mni152_gm_template(resolution=1).get_fdata(dtype=np.float32),
        "wm": datasets.load_mni152_wm_template(resolution=1).get_fdata(dtype=np.float32),
    }


@functools.lru_cache(maxsize=1)
def _mni_template_origin() -> np.ndarray:
    from nilearn import datasets

    return datasets.load_mni152_brain_mask(resolution=1).affine[:3, 3].copy()


@functools.lru_cache(maxsize=1)
def _brain_centre_mni() -> np.ndarray:
    """Centre of the template brain's bounding box in MNI mm (the template voxels are 1 mm)."""
    box = ndimage.find_objects((_templates()["mask"] > 0.5).astype(np.uint8))[0]
    centre_voxel = np.array([(s.start + s.stop - 1) / 2 for s in box])
    return centre_voxel + _mni_template_origin()


def _grid_origin_mni(shape, spacing) -> np.ndarray:
    """MNI millimetres of voxel (0, 0, 0): the grid is centred on the template brain."""
    return _brain_centre_mni() - (np.asarray(shape) - 1) / 2 * np.asarray(spacing)


def _resample(template: np.ndarray, shape: tuple[int, ...], spacing: tuple[float, ...]) -> np.ndarray:
    """Anti-alias (when coarser than 1 mm) and sample the template on the target grid."""
    sigma = [max(s - 1.0, 0.0) * 0.42 for s in spacing]
    source = ndimage.gaussian_filter(template, sigma) if max(sigma) > 0 else template
    offset = _grid_origin_mni(shape, spacing) - _mni_template_origin()
    return ndimage.affine_transform(source, np.asarray(spacing), offset=offset, output_shape=shape, order=1)


def _tumor_sites(brain: np.ndarray, parenchyma: np.ndarray, spacing, shape) -> tuple[np.ndarray, np.ndarray]:
    """Voxels deep enough in cerebral parenchyma to seed a tumor, and which of them are frontal."""
    depth = ndimage.distance_transform_edt(brain, sampling=spacing)
    candidates = brain & (parenchyma > 0.6) & (depth >= _MIN_DEPTH_MM)
    sites = np.argwhere(candidates)
    mni = sites * np.asarray(spacing) + _grid_origin_mni(shape, spacing)
    cerebral = (mni[:, 2] > -8) & (np.abs(mni[:, 0]) > 8)
    sites, mni = sites[cerebral], mni[cerebral]
    if len(sites) == 0:
        raise ValueError(f"phantom shape {shape} is too coarse to place a tumor inside the brain")
    return sites.astype(np.int32), mni[:, 1] > -5.0


def _vessel_network(shape, spacing, csf: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """Tube-like enhancing vessels: where two smooth random fields both cross zero, in sulcal CSF.

    The intersection of two zero-level sheets is a set of curves, which looks like vessels in a
    post-contrast T1 once blurred by the voxel size. A fixed seed keeps the vasculature the same
    for every patient, as in a shared template brain.
    """
    rng = np.random.default_rng(_VESSEL_SEED)
    cells = tuple(max(int(fov / 12.0), 4) for fov in FIELD_OF_VIEW_MM)
    first, second = smooth_noise(rng, shape, cells), smooth_noise(rng, shape, cells)
    width = 0.12 * max(min(spacing), 1.0)
    tubes = np.exp(-(first**2 + second**2) / (2 * width**2))
    return np.where(brain, tubes * np.clip(csf * 1.5, 0, 1), 0).astype(np.float32)
