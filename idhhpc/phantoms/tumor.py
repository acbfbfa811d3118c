"""Glioma lesions for phantoms: an IDH-dependent phenotype drawn at random, then drawn into a grid.

Phenotypes follow the imaging literature with deliberate overlap. IDH-mutant gliomas favour the
frontal lobe, rarely enhance or necrose, have sharp margins, little edema, and show the T2-FLAIR
mismatch sign in about half of cases. IDH-wildtype glioblastomas sit in any lobe, enhance in a
ring around necrosis, and carry wide infiltrative edema that follows white matter.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation

from idhhpc.phantoms.anatomy import Anatomy
from idhhpc.phantoms.noise import smooth_noise

NECROSIS, EDEMA, ENHANCING = 1, 2, 4


@dataclass(frozen=True)
class TumorSpec:
    """Everything that fixes one lesion; a follow-up scan reuses it with a new ``growth``."""

    centre: tuple[int, int, int]
    core_radius_mm: float
    axes: tuple[float, float, float]
    rotation: tuple[tuple[float, ...], ...]
    edema_ratio: float
    necrosis_fraction: float
    enhancement: str
    enhancement_strength: float
    margin_mm: float
    irregularity: float
    heterogeneity: float
    mismatch: bool
    shape_seed: int
    growth: float = 1.0


@dataclass(frozen=True)
class Lesion:
    """Per-voxel tissue weights inside ``box`` (each in [0, 1], summing to at most 1) and labels."""

    box: tuple[slice, slice, slice]
    edema: np.ndarray
    solid: np.ndarray
    necrosis: np.ndarray
    enhancing: np.ndarray
    flair_rim: np.ndarray
    texture: np.ndarray
    labels: np.ndarray

    @property
    def total(self) -> np.ndarray:
        return self.edema + self.solid + self.necrosis + self.enhancing


def sample_tumor(rng: np.random.Generator, mutant_like: bool, anatomy: Anatomy) -> TumorSpec:
    """Draw a lesion with the imaging phenotype of an IDH-mutant or IDH-wildtype glioma."""
    draw = _mutant_phenotype if mutant_like else _wildtype_phenotype
    return TumorSpec(
        centre=_pick_site(rng, anatomy, frontal_bias=0.65 if mutant_like else 0.3),
        axes=tuple(float(a) for a in rng.uniform(0.75, 1.25, size=3)),
        rotation=tuple(tuple(float(v) for v in row) for row in Rotation.random(random_state=rng).as_matrix()),
        shape_seed=int(rng.integers(2**32)),
        **draw(rng),
    )


def grown(spec: TumorSpec, rng: np.random.Generator) -> TumorSpec:
    """The same lesion a few weeks later: slightly larger or smaller, same shape and place."""
    return dataclasses.replace(spec, growth=spec.growth * float(rng.uniform(0.95, 1.15)))


def _mutant_phenotype(rng: np.random.Generator) -> dict:
    enhancement = rng.choice(["none", "patchy", "ring"], p=[0.75, 0.2, 0.05])
    return dict(
        core_radius_mm=float(np.clip(rng.normal(21, 5), 10, 34)),
        edema_ratio=float(rng.uniform(1.05, 1.3)),
        necrosis_fraction=float(rng.uniform(0.3, 0.5)) if rng.random() < 0.08 else 0.0,
        enhancement=str(enhancement),
        enhancement_strength=float(rng.uniform(0.3, 0.7)),
        margin_mm=float(rng.uniform(0.5, 1.5)),
        irregularity=float(rng.uniform(0.08, 0.18)),
        heterogeneity=float(rng.uniform(0.03, 0.08)),
        mismatch=bool(rng.random() < 0.5),
    )


def _wildtype_phenotype(rng: np.random.Generator) -> dict:
    enhancement = rng.choice(["ring", "patchy", "none"], p=[0.82, 0.1, 0.08])
    return dict(
        core_radius_mm=float(np.clip(rng.normal(17, 4), 8, 30)),
        edema_ratio=float(rng.uniform(1.5, 2.3)),
        necrosis_fraction=float(rng.uniform(0.4, 0.7)) if enhancement == "ring" else 0.0,
        enhancement=str(enhancement),
        enhancement_strength=float(rng.uniform(0.8, 1.2)),
        margin_mm=float(rng.uniform(2.0, 4.5)),
        irregularity=float(rng.uniform(0.15, 0.3)),
        heterogeneity=float(rng.uniform(0.1, 0.2)),
        mismatch=bool(rng.random() < 0.03),
    )


def _pick_site(rng: np.random.Generator, anatomy: Anatomy, frontal_bias: float) -> tuple[int, int, int]:
    frontal = anatomy.frontal_site if rng.random() < frontal_bias else ~anatomy.frontal_site
    pool = anatomy.tumor_sites[frontal] if frontal.any() else anatomy.tumor_sites
    return tuple(int(v) for v in pool[rng.integers(len(pool))])


def draw_lesion(spec: TumorSpec, anatomy: Anatomy) -> Lesion:
    """Tissue weights and labels of ``spec`` inside the box around it, clipped to the brain."""
    core_mm = spec.core_radius_mm * spec.growth
    box, offsets_mm = _box_around(spec, anatomy, reach_mm=core_mm * spec.edema_ratio * 1.8 + 3 * spec.margin_mm)
    rng = np.random.default_rng(spec.shape_seed)
    shape = offsets_mm.shape[:3]
    local = offsets_mm @ np.asarray(spec.rotation) / np.asarray(spec.axes)
    radius = np.sqrt((local**2).sum(axis=-1)) / core_mm / (1.0 + spec.irregularity * smooth_noise(rng, shape, 5))
    lesion, core, necrosis = _nested_regions(spec, radius, anatomy.wm[box], spec.margin_mm / core_mm, rng)
    enhancing = (core - necrosis) * _enhancing_share(spec, rng, shape)
    inside = anatomy.brain[box].astype(np.float32)
    weights = [w * inside for w in (lesion - core, core - necrosis - enhancing, necrosis, enhancing)]
    rim = (core - _inside(radius / 0.8, spec.margin_mm / core_mm * 0.5)) * inside if spec.mismatch else 0 * core
    texture = 1.0 + spec.heterogeneity * smooth_noise(rng, shape, 8)
    labels = _labels(lesion, core, enhancing, anatomy.brain[box])
    return Lesion(box, *weights, flair_rim=np.clip(rim, 0, 1), texture=texture, labels=labels)


def _nested_regions(spec: TumorSpec, radius: np.ndarray, white: np.ndarray, width: float, rng: np.random.Generator):
    """Soft whole-lesion, core and necrosis masks, each inside the previous one.

    Edema reaches further along white matter (it spreads along fibre tracts) and has a wider,
    infiltrative margin than the core.
    """
    spread = spec.edema_ratio * (1.0 + 0.35 * (white - 0.5) + 0.1 * smooth_noise(rng, radius.shape, 6))
    lesion = _inside(radius / spread, width * 1.5)
    core = np.minimum(_inside(radius, width * 0.5), lesion)
    if spec.necrosis_fraction <= 0:
        return lesion, core, np.zeros_like(core)
    return lesion, core, np.minimum(_inside(radius / spec.necrosis_fraction, width * 0.5), core)


def _box_around(spec: TumorSpec, anatomy: Anatomy, reach_mm: float):
    """The grid box reaching ``reach_mm`` around the centre, and each voxel's offset in mm."""
    spacing = np.asarray(anatomy.spacing)
    half = np.ceil(reach_mm / spacing).astype(int)
    lo = np.maximum(np.asarray(spec.centre) - half, 0)
    hi = np.minimum(np.asarray(spec.centre) + half + 1, anatomy.shape)
    axes = [(np.arange(a, b) - c) * s for a, b, c, s in zip(lo, hi, spec.centre, spacing)]
    offsets = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).astype(np.float32)
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi)), offsets


def _inside(normalised_radius: np.ndarray, width: float) -> np.ndarray:
    """Soft indicator of ``normalised_radius < 1``: a logistic edge ``width`` wide (sharp margin = small)."""
    return (1.0 / (1.0 + np.exp(np.clip((normalised_radius - 1.0) / max(width, 1e-3), -30, 30)))).astype(np.float32)


def _enhancing_share(spec: TumorSpec, rng: np.random.Generator, shape) -> np.ndarray | float:
    """Share of living tumor that enhances: all of it for a ring, scattered patches, or none."""
    if spec.enhancement == "ring":
        return 1.0
    if spec.enhancement == "patchy":
        return _inside(-smooth_noise(rng, shape, 7) / 1.6 + 2.0, 0.15)
    return 0.0


def _labels(lesion, core, enhancing, brain) -> np.ndarray:
    """BraTS labels: 2 edema, 1 necrotic / non-enhancing core, 4 enhancing (never 3), inside the brain."""
    labels = np.zeros(lesion.shape, dtype=np.uint8)
    labels[lesion > 0.5] = EDEMA
    labels[core > 0.5] = NECROSIS
    labels[(core > 0.5) & (enhancing > 0.5 * core)] = ENHANCING
    labels[~brain] = 0
    return labels
