"""A second phantom site: the same disease seen through other scanners, in the EGD layout.

Site A is the UCSF-PDGM-like generator of :mod:`idhhpc.phantoms.cohort`. Site B draws other
patients (another seed stream, another mutant share) with the same tumour biology, and changes
what a site changes: each contrast's intensity scale and its contrast (a power law on the
signal), a stronger receive-coil bias field, more noise, coarser and anisotropic voxels (the
field of view rendered on fewer, thicker slices), and three scanners whose settings differ a
little. It is written as the Erasmus Glioma Database is distributed (:mod:`idhhpc.data.egd`):
``SUBJECTS/EGD-0004/{FLAIR,T1,T1GD,T2,MASK}.nii.gz`` + ``metadata.json`` and one
``METADATA/Brain_mask.nii.gz`` (every phantom shares the template brain, as EGD's subjects share
an atlas). ``oracle.csv`` holds each patient's Bayes-optimal score, as for site A.

:func:`plant_duplicates` copies site-A patients into such a cohort under new IDs, re-saved as
another file format and data type, with another affine and scaled intensities: what the leakage
guard (:mod:`idhhpc.data.leakage`) must find.

    python -m idhhpc.phantoms OUT --site B --layout egd --patients 100 --seed 1 --shape 64 64 48
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from tqdm import tqdm

from idhhpc.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text
from idhhpc.constants import (
    EGD_BRAIN_MASK,
    EGD_METADATA_DIR,
    EGD_SUBJECT_METADATA,
    EGD_SUBJECTS_DIR,
    EGD_TUMOR_MASK,
    EGD_UNKNOWN,
)
from idhhpc.ids import validate_patient_id
from idhhpc.phantoms.anatomy import load_anatomy
from idhhpc.phantoms.clinical import clinical_row
from idhhpc.phantoms.cohort import (
    _CLINICAL,
    ORACLE_NAME,
    PlannedPatient,
    _rng,
    nifti_gz_bytes,
    oracle_csv_text,
    oracle_rows,
    plan_cohort,
    render_patient,
)
from idhhpc.phantoms.mri import SIGNAL
from idhhpc.phantoms.noise import smooth_noise

EGD_FILES = {"FLAIR": "FLAIR", "T1": "T1", "T1c": "T1GD", "T2": "T2"}
"""Phantom contrast → EGD file stem."""
_SITE_STREAM = 11


@dataclass(frozen=True)
class Scanner:
    manufacturer: str
    field_strength: str
    gamma: float
    """Multiplies the site's contrast exponents: each scanner's contrast differs a little."""
    noise: float
    """Multiplies the site's extra noise."""


@dataclass(frozen=True)
class SiteProfile:
    """What differs at a site, relative to site A's generator."""

    name: str
    seed_offset: int
    """Added to ``--seed`` so the same seed never redraws site A's patients."""
    mutant_fraction: float
    scale: dict[str, float]
    """Each contrast's intensity scale relative to site A."""
    gamma: dict[str, float]
    """Each contrast's exponent on the signal (1 keeps site A's contrast)."""
    bias_strength: tuple[float, float]
    """Range of the log bias field's standard deviation (site A draws 0.08-0.18, unapplied)."""
    noise: tuple[float, float]
    """Range of extra Rician noise, as a share of white matter's signal (site A: 0.015-0.045)."""
    voxel_scale: tuple[float, float, float]
    """Voxel size relative to site A along x, y, z (2 on z: slices twice as thick)."""
    scanners: tuple[Scanner, ...]


SITES = {
    "B": SiteProfile(
        name="B", seed_offset=7_919_000, mutant_fraction=0.55,
        scale={"FLAIR": 2.6, "T1": 0.45, "T1c": 0.5, "T2": 3.2},
        gamma={"FLAIR": 1.35, "T1": 0.8, "T1c": 1.2, "T2": 0.75},
        bias_strength=(0.25, 0.35), noise=(0.05, 0.08), voxel_scale=(1.25, 1.25, 2.0),
        scanners=(Scanner("Philips", "1.5", 1.0, 1.0), Scanner("Siemens", "3", 0.9, 0.7),
                  Scanner("GE", "1.5", 1.1, 1.3)),
    ),
}


def site_shape(profile: SiteProfile, shape: tuple[int, int, int]) -> tuple[int, int, int]:
    """The grid of a site: site A's field of view on voxels ``voxel_scale`` times larger."""
    return tuple(max(8, round(s / f)) for s, f in zip(shape, profile.voxel_scale))


def egd_id(patient: PlannedPatient) -> str:
    return f"EGD-{patient.number:04d}"


def generate_site_cohort(out_dir: Path, n_patients: int, site: str = "B", seed: int = 0,
                         shape: tuple[int, int, int] = (240, 240, 155), crossover: float = 0.15,
                         mutant_fraction: float | None = None, n_unknown: int | None = None,
                         progress: bool = True) -> Path:
    """Write a site's phantom cohort in the EGD layout into ``out_dir``; return its SUBJECTS folder.

    ``oracle.csv`` is written last and marks a complete cohort.
    """
    profile, out_dir = SITES[site], Path(out_dir)
    site_seed = seed + profile.seed_offset
    share = profile.mutant_fraction if mutant_fraction is None else mutant_fraction
    plan = plan_cohort(n_patients, site_seed, crossover, share, n_followups=0, n_unknown=n_unknown)
    anatomy = load_anatomy(site_shape(profile, tuple(shape)))
    brain = anatomy.brain.astype(np.uint8)
    atomic_write_bytes(out_dir / EGD_METADATA_DIR / EGD_BRAIN_MASK, nifti_gz_bytes(brain, anatomy.affine))
    for patient in tqdm(plan, desc=f"site {site} -> {out_dir.name}", unit="patient", disable=not progress):
        rng = _rng(site_seed, _SITE_STREAM, patient.index)
        scanner = profile.scanners[int(rng.integers(len(profile.scanners)))]
        volumes = render_patient(patient, anatomy, site_seed)
        images = {name: site_image(volumes[name], anatomy.brain, profile, scanner, name, rng) for name in EGD_FILES}
        write_subject(out_dir, egd_id(patient), images, volumes["tumor_segmentation"], anatomy.affine,
                      subject_metadata(patient, scanner, site_seed))
    rows = [{**row, "patient_id": f"EGD-{row['patient_id'].rsplit('-', 1)[1]}"} for row in oracle_rows(plan, crossover)]
    atomic_write_text(out_dir / ORACLE_NAME, oracle_csv_text(rows))
    return out_dir / EGD_SUBJECTS_DIR


def site_image(image: np.ndarray, brain: np.ndarray, profile: SiteProfile, scanner: Scanner, contrast: str,
               rng: np.random.Generator) -> np.ndarray:
    """Site A's rendering of one contrast as this site's scanner delivers it."""
    reference = SIGNAL[contrast]["wm"]
    gamma = profile.gamma[contrast] * scanner.gamma
    signal = reference * np.power(np.maximum(image, 0.0) / reference, gamma)
    bias = np.exp(rng.uniform(*profile.bias_strength) * smooth_noise(rng, image.shape, 3))
    sigma = rng.uniform(*profile.noise) * scanner.noise * reference
    values = (signal * bias)[brain]
    real = values + sigma * rng.standard_normal(values.shape, dtype=np.float32)
    imaginary = sigma * rng.standard_normal(values.shape, dtype=np.float32)
    out = np.zeros(image.shape, dtype=np.float32)
    out[brain] = np.round(profile.scale[contrast] * np.sqrt(real**2 + imaginary**2))
    return out


def subject_metadata(patient: PlannedPatient, scanner: Scanner, seed: int) -> dict:
    """``metadata.json`` as EGD spells it: labels, clinical data, scan characteristics."""
    clinical = clinical_row(_rng(seed, _CLINICAL, patient.index), patient.number, patient.idh)
    idh = {"mutant": 1, "wildtype": 0}.get(patient.idh, EGD_UNKNOWN)
    return {
        "Genetic_and_Histological_labels": {"IDH": idh, "1p19q": -1, "Grade": int(clinical["WHO CNS Grade"])},
        "Clinical_data": {"Age": float(clinical["Age at MRI"]), "Sex": clinical["Sex"]},
        "Scan_characteristics": {"Manufacturer": scanner.manufacturer, "Field_strength": scanner.field_strength},
    }


def write_subject(root: Path, subject_id: str, images: dict[str, np.ndarray], tumor: np.ndarray | None,
                  affine: np.ndarray, metadata: dict | None) -> Path:
    """One ``SUBJECTS/<id>/`` folder: the four EGD files, ``MASK.nii.gz`` and ``metadata.json``
    (each left out when None; public so tests can craft EGD edge cases)."""
    folder = Path(root) / EGD_SUBJECTS_DIR / validate_patient_id(subject_id)
    for contrast, image in images.items():
        atomic_write_bytes(folder / f"{EGD_FILES[contrast]}.nii.gz", nifti_gz_bytes(image, affine))
    if tumor is not None:
        atomic_write_bytes(folder / EGD_TUMOR_MASK, nifti_gz_bytes(tumor, affine))
    if metadata is not None:
        atomic_write_json(folder / EGD_SUBJECT_METADATA, metadata)
    return folder


def plant_duplicates(site_a: Path, external_root: Path, patient_ids: list[str], scale: float = 0.37,
                     seed: int = 0) -> dict[str, str]:
    """Copy site-A patients (UCSF-PDGM layout) into an EGD cohort under new IDs, as another site
    would re-share them: uncompressed ``.nii`` instead of ``.nii.gz``, int16 instead of float32,
    the x axis stored reversed with an affine that says so (the same anatomy in another voxel
    order) and voxels declared 10 % larger, and intensities scaled by ``scale``. Returns
    {new ID: site-A ID}."""
    planted = {}
    for k, source in enumerate(patient_ids):
        folder = Path(site_a) / f"{validate_patient_id(source)}_nifti"
        new_id = f"EGD-{9000 + k:04d}"
        target = Path(external_root) / EGD_SUBJECTS_DIR / new_id
        for contrast, stem in {**EGD_FILES, "tumor_segmentation": EGD_TUMOR_MASK.split(".")[0]}.items():
            image = nib.load(folder / f"{source}_{contrast}.nii.gz")
            data, affine = _reversed_x(np.asarray(image.dataobj), image.affine)
            if contrast != "tumor_segmentation":
                data = np.round(data * scale).astype(np.int16)
            resaved = nib.Nifti1Image(data.astype(np.int16 if contrast != "tumor_segmentation" else np.uint8), affine)
            atomic_write_bytes(target / f"{stem}.nii", resaved.to_bytes())
        label = _site_a_label(site_a, source)
        atomic_write_json(target / EGD_SUBJECT_METADATA, {"Genetic_and_Histological_labels": {"IDH": label},
                                                          "Clinical_data": {"Age": 50.0},
                                                          "Scan_characteristics": {"Manufacturer": "Planted"}})
        planted[new_id] = source
    return planted


def _reversed_x(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The same image with its first voxel axis reversed and voxels 10 % larger."""
    flipped = data[::-1].copy()
    out = np.array(affine, dtype=float)
    out[:3, 3] = out[:3, 3] + out[:3, 0] * (data.shape[0] - 1)
    out[:3, 0] = -out[:3, 0]
    out[:3, :3] *= 1.1
    return flipped, out


def _site_a_label(site_a: Path, patient_id: str) -> int:
    """The planted patient's label from site A's oracle (its true class)."""
    with open(Path(site_a) / ORACLE_NAME, newline="") as handle:
        for row in csv.DictReader(handle):
            if row["patient_id"] == patient_id:
                return int(row["label"]) if row["label"] else EGD_UNKNOWN
    raise KeyError(f"{patient_id} not in {Path(site_a) / ORACLE_NAME}")

