"""Four MRI contrasts of one phantom patient, with the imperfections of a real scanner.

Each voxel mixes tissue classes by their fractions; each class has a typical signal per contrast
(T1: WM > GM > CSF; T2: CSF > GM > WM; FLAIR: CSF suppressed, lesions bright; T1c: T1 plus
enhancement of vessels and enhancing tumor). Then each contrast gets its own global scale,
Rician noise, a smooth bias field and, for one contrast, a small misregistration. The bias
field is always drawn, so the bias-corrected image equals the plain image of a run without it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from idhhpc.phantoms.anatomy import Anatomy
from idhhpc.phantoms.noise import smooth_noise
from idhhpc.phantoms.tumor import Lesion, TumorSpec

CONTRASTS = ("FLAIR", "T1", "T1c", "T2")

#: Typical signal (arbitrary units) of each tissue class per contrast, before scanner effects.
#: Cysts hold clear fluid: CSF-like (T2 bright, FLAIR suppressed, T1 dark) and untextured.
SIGNAL: dict[str, dict[str, float]] = {
    "FLAIR": dict(csf=150, gm=700, wm=520, edema=1050, solid=950, necrosis=520, enhancing=850, vessels=0, cyst=200),
    "T1": dict(csf=300, gm=600, wm=850, edema=480, solid=450, necrosis=280, enhancing=560, vessels=0, cyst=320),
    "T1c": dict(csf=300, gm=620, wm=860, edema=490, solid=460, necrosis=290, enhancing=1250, vessels=700, cyst=330),
    "T2": dict(csf=1500, gm=850, wm=600, edema=1250, solid=1150, necrosis=1450, enhancing=900, vessels=0, cyst=1600),
}
#: T2-FLAIR mismatch sign: homogeneously bright on T2, dark on FLAIR except for a bright rim.
MISMATCH_SIGNAL = dict(T2_solid=1350, FLAIR_solid=380, FLAIR_rim=1000)


@dataclass(frozen=True)
class Scan:
    """The rendered contrasts (bias-free) and the multiplicative bias field of each."""

    images: dict[str, np.ndarray]
    bias_fields: dict[str, np.ndarray]

    def with_bias(self) -> dict[str, np.ndarray]:
        return {name: np.round(image * self.bias_fields[name]) for name, image in self.images.items()}


def scan_patient(anatomy: Anatomy, spec: TumorSpec, lesion: Lesion, rng: np.random.Generator,
                 contrast_names: tuple[str, ...] = CONTRASTS) -> Scan:
    """Render every contrast of a patient and apply this patient's scanner effects."""
    shifted = contrast_names[int(rng.integers(len(contrast_names)))]
    images, biases = {}, {}
    for name in contrast_names:
        clean = _tissue_image(anatomy, lesion, name, spec.mismatch, spec.enhancement_strength)
        if name == shifted:
            clean = _misregister(clean, anatomy, rng)
        images[name] = _acquire(clean, anatomy, rng, SIGNAL[name]["wm"])
        biases[name] = _bias_field(anatomy, rng)
    return Scan(images, biases)


def _tissue_image(anatomy: Anatomy, lesion: Lesion, contrast: str, mismatch: bool, strength: float) -> np.ndarray:
    signal = SIGNAL[contrast]
    image = anatomy.csf * signal["csf"] + anatomy.gm * signal["gm"] + anatomy.wm * signal["wm"]
    image += anatomy.vessels * signal["vessels"]
    region = image[lesion.box]
    region *= 1.0 - lesion.total
    region += _lesion_signal(lesion, contrast, mismatch, strength) * lesion.texture
    region += lesion.cyst * signal["cyst"]
    return image


def _lesion_signal(lesion: Lesion, contrast: str, mismatch: bool, strength: float) -> np.ndarray:
    signal = SIGNAL[contrast]
    solid = signal["solid"]
    if mismatch and contrast == "T2":
        solid = MISMATCH_SIGNAL["T2_solid"]
    if mismatch and contrast == "FLAIR":
        solid = MISMATCH_SIGNAL["FLAIR_solid"]
    enhancing = signal["enhancing"]
    if contrast == "T1c":
        enhancing = SIGNAL["T1"]["enhancing"] + strength * (signal["enhancing"] - SIGNAL["T1"]["enhancing"])
    mixed = lesion.edema * signal["edema"] + lesion.solid * solid
    mixed += lesion.necrosis * signal["necrosis"] + lesion.enhancing * enhancing
    if mismatch and contrast == "FLAIR":
        mixed += lesion.flair_rim * (MISMATCH_SIGNAL["FLAIR_rim"] - solid) * (lesion.solid > 0.05)
    return mixed


def _misregister(image: np.ndarray, anatomy: Anatomy, rng: np.random.Generator) -> np.ndarray:
    """Shift the content by 0.2-1 voxel in a random direction; the affine stays the same."""
    direction = rng.standard_normal(3)
    shift = direction / np.linalg.norm(direction) * rng.uniform(0.2, 1.0)
    moved = image.copy()
    box = tuple(slice(max(s.start - 2, 0), s.stop + 2) for s in anatomy.brain_box)
    moved[box] = ndimage.shift(image[box], shift, order=1, mode="nearest")
    return moved


def _acquire(clean: np.ndarray, anatomy: Anatomy, rng: np.random.Generator, reference: float) -> np.ndarray:
    """Global gain and Rician noise inside the brain; zero outside, as in skull-stripped data.

    Values are rounded to whole numbers (scanners deliver integers) but kept float32 like the
    real files; the zero low mantissa bits make gzip several times faster.
    """
    gain = rng.uniform(0.75, 1.35)
    sigma = rng.uniform(0.015, 0.045) * reference
    values = clean[anatomy.brain]
    real = values + sigma * rng.standard_normal(values.shape, dtype=np.float32)
    imaginary = sigma * rng.standard_normal(values.shape, dtype=np.float32)
    image = np.zeros(anatomy.shape, dtype=np.float32)
    image[anatomy.brain] = np.round(gain * np.sqrt(real**2 + imaginary**2))
    return image


def _bias_field(anatomy: Anatomy, rng: np.random.Generator) -> np.ndarray:
    """A smooth multiplicative field of roughly +-15 %, like receive-coil inhomogeneity."""
    log_field = rng.uniform(0.08, 0.18) * smooth_noise(rng, anatomy.shape, 3)
    return np.exp(log_field).astype(np.float32)
