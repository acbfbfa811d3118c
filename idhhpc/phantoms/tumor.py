"""Glioma lesions for phantoms: a phenotype (see :mod:`phantom_phenotype`) placed and drawn into a grid.

:func:`sample_tumor` adds to the IDH-dependent phenotype everything that does not depend on the
class (site within the drawn region, shape, orientation, cyst size and place), so the images
carry no class information beyond the phenotype's. :func:`draw_lesion` turns the spec into soft
tissue maps: edema that follows white matter, a core whose margin width and irregularity are
features, necrosis, patchy or ring (outer-shell) enhancement, a sharply bounded fluid cyst, the
T2-FLAIR mismatch rim, and a texture of the phenotype's heterogeneity.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation

from idhhpc.constants import EDEMA, ENHANCING, NECROSIS
from idhhpc.phantoms.anatomy import Anatomy
from idhhpc.phantoms.noise import smooth_noise
from idhhpc.phantoms.phenotype import Phenotype, draw_phenotype

#: Ring enhancement is the outer shell of the core, from this share of the core radius outwards.
RING_INNER = 0.75
#: Cyst radius (share of the core radius) and edge width (share of its own radius): sharp.
CYST_RADIUS = (0.35, 0.55)
CYST_EDGE = 0.04


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
    cyst_radius: float = 0.0
    cyst_offset: tuple[float, float, float] = (0.0, 0.0, 0.0)


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
    cyst: np.ndarray | float = 0.0

    @property
    def total(self) -> np.ndarray:
        return self.edema + self.solid + self.necrosis + self.enhancing + self.cyst


def sample_tumor(rng: np.random.Generator, phenotype: Phenotype | bool, anatomy: Anatomy) -> TumorSpec:
    """Place and shape a lesion of ``phenotype``; ``rng`` only draws class-independent nuisances.

    A bool instead of a phenotype draws one from the mutant (True) or wildtype distribution
    first, from the same ``rng`` (the old call style).
    """
    if isinstance(phenotype, (bool, np.bool_)):
        phenotype = draw_phenotype(rng, bool(phenotype))
    centre = _pick_site(rng, anatomy, phenotype.frontal)
    axes = tuple(float(a) for a in rng.uniform(0.75, 1.25, size=3))
    rotation = tuple(tuple(float(v) for v in row) for row in Rotation.random(random_state=rng).as_matrix())
    shape_seed = int(rng.integers(2**32))
    cyst_radius, cyst_offset = _cyst_geometry(rng)
    return TumorSpec(
        centre=centre,
        core_radius_mm=phenotype.core_radius_mm,
        axes=axes,
        rotation=rotation,
        edema_ratio=phenotype.edema_ratio,
        necrosis_fraction=phenotype.necrosis_fraction if phenotype.necrosis else 0.0,
        enhancement=phenotype.enhancement,
        enhancement_strength=phenotype.enhancement_strength or 0.0,
        margin_mm=phenotype.margin_mm,
        irregularity=phenotype.irregularity,
        heterogeneity=phenotype.heterogeneity,
        mismatch=phenotype.mismatch,
        shape_seed=shape_seed,
        cyst_radius=cyst_radius if phenotype.cyst else 0.0,
        cyst_offset=cyst_offset,
    )


def grown(spec: TumorSpec, rng: np.random.Generator) -> TumorSpec:
    """The same lesion a few weeks later: slightly larger or smaller, same shape and place."""
    return dataclasses.replace(spec, growth=spec.growth * float(rng.uniform(0.95, 1.15)))


def _cyst_geometry(rng: np.random.Generator) -> tuple[float, tuple[float, float, float]]:
    """Cyst radius and centre (in core radii, lesion frame), drawn whether or not there is a cyst,
    from one distribution for both classes: only the cyst's presence carries IDH information."""
    radius = float(rng.uniform(*CYST_RADIUS))
    direction = rng.standard_normal(3)
    direction /= np.linalg.norm(direction)
    distance = float(rng.uniform(0.0, 0.85 - radius))
    return radius, tuple(float(v) for v in direction * distance)


def _pick_site(rng: np.random.Generator, anatomy: Anatomy, frontal: bool) -> tuple[int, int, int]:
    """A uniformly drawn site in the frontal region or elsewhere (anywhere if that region is empty)."""
    region = anatomy.frontal_site if frontal else ~anatomy.frontal_site
    pool = anatomy.tumor_sites[region] if region.any() else anatomy.tumor_sites
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
    enhancing = (core - necrosis) * _enhancing_share(spec, rng, shape, radius)
    inside = anatomy.brain[box].astype(np.float32)
    cyst_share = _cyst_share(spec, local / core_mm)
    weights = [lesion - core, core - necrosis - enhancing, necrosis, enhancing]
    weights = [weights[0]] + [w * (1.0 - cyst_share) for w in weights[1:]] + [core * cyst_share]
    weights = [w * inside for w in weights]
    rim = (core - _inside(radius / 0.8, spec.margin_mm / core_mm * 0.5)) * inside if spec.mismatch else 0 * core
    texture = 1.0 + spec.heterogeneity * smooth_noise(rng, shape, 8)
    labels = _labels(lesion, core, weights[3], anatomy.brain[box])
    edema, solid, necrotic, enhancing, cyst = weights
    return Lesion(box, edema, solid, necrotic, enhancing, flair_rim=np.clip(rim, 0, 1), texture=texture,
                  labels=labels, cyst=cyst)


def _cyst_share(spec: TumorSpec, local_radii: np.ndarray) -> np.ndarray | float:
    """Sharply bounded ball inside the core (coordinates in core radii); 0 without a cyst."""
    if spec.cyst_radius <= 0:
        return 0.0
    distance = np.sqrt(((local_radii - np.asarray(spec.cyst_offset, np.float32)) ** 2).sum(axis=-1))
    return _inside(distance / spec.cyst_radius, CYST_EDGE)


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


def _enhancing_share(spec: TumorSpec, rng: np.random.Generator, shape, radius: np.ndarray) -> np.ndarray | float:
    """Share of living tumor that enhances: the core's outer shell for a ring (so some solid,
    non-enhancing tumor always remains inside it), scattered patches (about a sixth), or none."""
    patches = smooth_noise(rng, shape, 7)  # always drawn: the texture draws stay the same
    if spec.enhancement == "ring":
        return 1.0 - _inside(radius / RING_INNER, 0.05)
    if spec.enhancement == "patchy":
        return _inside(2.0 - patches, 0.15)
    return 0.0


def _labels(lesion, core, enhancing, brain) -> np.ndarray:
    """BraTS labels: 2 edema, 1 necrotic / non-enhancing core, 4 enhancing (never 3), inside the brain."""
    labels = np.zeros(lesion.shape, dtype=np.uint8)
    labels[lesion > 0.5] = EDEMA
    labels[core > 0.5] = NECROSIS
    labels[(core > 0.5) & (enhancing > 0.5 * core)] = ENHANCING
    labels[~brain] = 0
    return labels
