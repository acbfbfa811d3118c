"""Phantom UCSF-PDGM cohorts: synthetic gliomas in the exact on-disk layout of the real dataset.

No real data is needed to run, test or benchmark the pipeline: every stage reads a phantom cohort
exactly as it would read UCSF-PDGM (4-digit folders, 3-digit CSV IDs, follow-ups, unlabeled rows,
``T1c``/``T1gad``, ``_bias`` variants). Brains come from the MNI152 template, tumors carry an
IDH-dependent phenotype whose class-conditional densities overlap and are known exactly
(:mod:`idhhpc.phantoms.phenotype`), and ``crossover`` is label noise: each labelled
patient's phenotype is drawn, with probability ``crossover``, from the other class's
distribution. The same seed gives the same arrays (and, since gzip headers carry no timestamp
here, the same files).

Besides the UCSF-PDGM files the cohort root holds the Bayes oracle, written before the metadata
CSV (which is written last and marks a complete cohort):

``oracle.csv``
    ``patient_id`` (folder ID, ``UCSF-PDGM-0004``), ``label`` (1 mutant, 0 wildtype, empty for
    unknown IDH), ``llr`` (exact log-likelihood ratio of the drawn phenotype, crossover
    included: ``log[((1-c) p_m + c p_w) / ((1-c) p_w + c p_m)]``), ``prob_mutant`` (its posterior
    with the cohort's mutant prior), ``followup_of`` (the base patient's ID for a follow-up
    re-scan, which shares its phenotype; empty otherwise) and ``drawn_from`` (the class whose
    distribution gave the phenotype; differs from the label for crossed-over patients).
``phenotypes.json``
    crossover, mutant prior, the feature distributions' parameters and every patient's drawn
    phenotype, so the LLR can be recomputed independently.

:func:`plan_cohort` draws the phenotypes without rendering anything, so :func:`oracle_rows`
of a plan is cheap (thousands of patients per second).

    python -m idhhpc.phantoms OUT --patients 60 --seed 0 --shape 96 96 64   (idhhpc.phantoms.cli)
"""

from __future__ import annotations

import csv
import dataclasses
import gzip
import io
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from tqdm import tqdm

from idhhpc.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text
from idhhpc.ids import validate_patient_id
from idhhpc.phantoms.anatomy import Anatomy, load_anatomy
from idhhpc.phantoms.clinical import (
    clinical_row,
    folder_id,
    followup_row,
    metadata_csv_text,
)
from idhhpc.phantoms.mri import scan_patient
from idhhpc.phantoms.phenotype import (
    FEATURES,
    Phenotype,
    draw_phenotype,
    log_likelihoods,
    mixture_llr,
    posterior,
)
from idhhpc.phantoms.tumor import TumorSpec, draw_lesion, grown, sample_tumor

METADATA_NAME = "UCSF-PDGM-metadata_v2.csv"
GENERATOR_VERSION = 2
"""Bumped when the same seed and spec draw different cohorts (2: graded phenotypes, oracle.csv)."""
ORACLE_NAME = "oracle.csv"
PHENOTYPES_NAME = "phenotypes.json"
ORACLE_COLUMNS = ("patient_id", "label", "llr", "prob_mutant", "followup_of", "drawn_from")
DEFAULT_MUTANT_FRACTION = 103 / 501
T1C_NAMES = ("T1c", "T1gad")
#: Share of unknown-IDH patients whose phenotype is drawn from the mutant distribution.
UNKNOWN_MUTANT_LIKE = 0.25
_CLINICAL, _TUMOR, _SCANNER, _GROWTH, _PHENOTYPE = 1, 2, 3, 4, 5


@dataclass(frozen=True)
class PlannedPatient:
    """One folder of the cohort: its ID, true IDH class, imaging phenotype, and follow-up origin.

    ``mutant_like`` says which class's distribution ``phenotype`` was drawn from (the true class
    unless the patient crossed over). A follow-up shares its base patient's phenotype. Without
    a ``phenotype`` (hand-made plans) rendering draws one from the ``mutant_like`` class.
    """

    index: int
    number: int
    idh: str
    mutant_like: bool
    followup: str | None = None
    base_index: int | None = None
    phenotype: Phenotype | None = None

    @property
    def folder_id(self) -> str:
        return folder_id(self.number, self.followup)


def plan_cohort(n_patients: int, seed: int = 0, crossover: float = 0.15,
                mutant_fraction: float = DEFAULT_MUTANT_FRACTION, n_followups: int | None = None,
                n_unknown: int | None = None) -> list[PlannedPatient]:
    """Who is in the cohort, in CSV order: ``n_patients`` labelled patients plus unlabeled ones
    and follow-up re-scans (extra rows, so ``n_patients`` is what training can use)."""
    _check_counts(n_patients, crossover, mutant_fraction)
    rng = np.random.default_rng([seed, 0])
    n_followups = _default_extra(n_patients) if n_followups is None else n_followups
    n_unknown = _default_extra(n_patients) if n_unknown is None else n_unknown
    if n_followups < 0 or n_unknown < 0:
        raise ValueError(f"follow-up and unknown counts must be >= 0, got {n_followups} and {n_unknown}")
    classes = rng.permutation(_class_list(n_patients, mutant_fraction) + ["unknown"] * n_unknown)
    numbers = _non_contiguous_numbers(rng, len(classes))
    baselines = []
    for i, idh in enumerate(classes):
        mutant_like, phenotype = _phenotype_of(_rng(seed, _PHENOTYPE, i), str(idh), crossover)
        baselines.append(PlannedPatient(i, int(numbers[i]), str(idh), mutant_like, phenotype=phenotype))
    return _with_followups(rng, baselines, n_followups)


def mutant_prior(plan: list[PlannedPatient]) -> float:
    """Share of mutants among the labelled baseline patients: each patient's prior probability
    (the default mutant fraction for a plan with one class only, where no prior is learnable)."""
    labels = [p.idh == "mutant" for p in plan if p.followup is None and p.idh != "unknown"]
    share = sum(labels) / len(labels) if labels else 0.0
    return share if 0.0 < share < 1.0 else DEFAULT_MUTANT_FRACTION


def oracle_rows(plan: list[PlannedPatient], crossover: float) -> list[dict[str, str]]:
    """The rows of ``oracle.csv`` for a plan (see the module docstring), in plan order."""
    prior = mutant_prior(plan)
    folder_ids = {p.index: p.folder_id for p in plan}
    rows = []
    for patient in plan:
        llr = float(mixture_llr(*log_likelihoods(_phenotype(patient)), crossover))
        rows.append({
            "patient_id": patient.folder_id,
            "label": {"mutant": "1", "wildtype": "0"}.get(patient.idh, ""),
            "llr": repr(llr),
            "prob_mutant": repr(float(posterior(llr, prior))),
            "followup_of": folder_ids[patient.base_index] if patient.followup is not None else "",
            "drawn_from": "mutant" if patient.mutant_like else "wildtype",
        })
    return rows


def oracle_csv_text(rows: list[dict[str, str]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=ORACLE_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def phenotypes_record(plan: list[PlannedPatient], crossover: float, seed: int) -> dict:
    """What ``phenotypes.json`` holds: enough to recompute every LLR without this code."""
    folder_ids = {p.index: p.folder_id for p in plan}
    return {
        "format": 1,
        "seed": seed,
        "crossover": crossover,
        "mutant_prior": mutant_prior(plan),
        "features": {name: {"type": type(dist).__name__, **dataclasses.asdict(dist)} for name, dist in FEATURES.items()},
        "patients": {
            p.folder_id: {
                "idh": p.idh,
                "drawn_from": "mutant" if p.mutant_like else "wildtype",
                "followup_of": folder_ids[p.base_index] if p.followup is not None else None,
                "phenotype": _phenotype(p).to_dict(),
            }
            for p in plan
        },
    }


def generate_cohort(out_dir: Path, n_patients: int, seed: int = 0, shape: tuple[int, int, int] = (240, 240, 155),
                    crossover: float = 0.15, mutant_fraction: float = DEFAULT_MUTANT_FRACTION,
                    t1c_name: str = "T1c", with_bias: bool = False, n_followups: int | None = None,
                    n_unknown: int | None = None, progress: bool = True) -> Path:
    """Write a phantom cohort into ``out_dir`` and return the metadata CSV path.

    The metadata CSV is written last, after ``phenotypes.json`` and ``oracle.csv``, so its
    presence means every patient folder and the oracle are complete.
    """
    if t1c_name not in T1C_NAMES:
        raise ValueError(f"t1c_name must be one of {T1C_NAMES}, got {t1c_name!r}")
    out_dir = Path(out_dir)
    plan = plan_cohort(n_patients, seed, crossover, mutant_fraction, n_followups, n_unknown)
    anatomy = load_anatomy(tuple(shape))
    rows: dict[int, dict[str, str]] = {}
    csv_rows = []
    for patient in tqdm(plan, desc=f"phantoms -> {out_dir.name}", unit="patient", disable=not progress):
        if patient.followup is None:
            rows[patient.index] = clinical_row(_rng(seed, _CLINICAL, patient.index), patient.number, patient.idh)
            csv_rows.append(rows[patient.index])
        else:
            csv_rows.append(followup_row(rows[patient.base_index], patient.number, patient.followup))
        volumes = render_patient(patient, anatomy, seed, t1c_name, with_bias)
        write_patient(out_dir / f"{patient.folder_id}_nifti", patient.folder_id, volumes, anatomy.affine)
    atomic_write_json(out_dir / PHENOTYPES_NAME, phenotypes_record(plan, crossover, seed))
    atomic_write_text(out_dir / ORACLE_NAME, oracle_csv_text(oracle_rows(plan, crossover)))
    csv_path = out_dir / METADATA_NAME
    atomic_write_text(csv_path, metadata_csv_text(csv_rows))
    return csv_path


def render_patient(patient: PlannedPatient, anatomy: Anatomy, seed: int, t1c_name: str = "T1c",
                   with_bias: bool = False) -> dict[str, np.ndarray]:
    """All volumes of one patient folder, keyed by file suffix (``FLAIR``, ``tumor_segmentation``...)."""
    spec = _tumor_of(patient, anatomy, seed)
    lesion = draw_lesion(spec, anatomy)
    scan = scan_patient(anatomy, spec, lesion, _rng(seed, _SCANNER, patient.index))
    rename = {"T1c": t1c_name}
    plain = scan.with_bias() if with_bias else scan.images
    volumes = {rename.get(name, name): image for name, image in plain.items()}
    if with_bias:
        volumes.update({f"{rename.get(name, name)}_bias": image for name, image in scan.images.items()})
    labels = np.zeros(anatomy.shape, dtype=np.uint8)
    labels[lesion.box] = lesion.labels
    volumes["brain_segmentation"] = anatomy.brain.astype(np.uint8)
    volumes["tumor_segmentation"] = labels
    return volumes


def write_patient(folder: Path, file_prefix: str, volumes: dict[str, np.ndarray], affine: np.ndarray) -> list[Path]:
    """Write ``{folder}/{file_prefix}_{suffix}.nii.gz`` for each volume, atomically; return the paths.

    Public so tests elsewhere can craft broken patients (wrong shapes, missing contrasts, NaNs)
    in the real layout. Boolean arrays are stored as uint8, since NIfTI has no boolean type.
    """
    folder = Path(folder)
    validate_patient_id(folder.name)
    validate_patient_id(file_prefix)
    paths = []
    for suffix, array in volumes.items():
        path = folder / f"{validate_patient_id(f'{file_prefix}_{suffix}')}.nii.gz"
        atomic_write_bytes(path, nifti_gz_bytes(np.asarray(array), affine))
        paths.append(path)
    return paths


def nifti_gz_bytes(array: np.ndarray, affine: np.ndarray) -> bytes:
    """A gzipped NIfTI-1 file with a zero gzip timestamp, so equal arrays give equal bytes."""
    image = nib.Nifti1Image(array.astype(np.uint8) if array.dtype == bool else array, np.asarray(affine, float))
    image.header.set_xyzt_units("mm")
    image.set_qform(image.affine, code=1)
    image.set_sform(image.affine, code=1)
    return gzip.compress(image.to_bytes(), compresslevel=1, mtime=0)


def _tumor_of(patient: PlannedPatient, anatomy: Anatomy, seed: int) -> TumorSpec:
    """A follow-up re-draws its base patient's lesion (same seed) and lets it grow a little."""
    origin = patient.base_index if patient.followup is not None else patient.index
    spec = sample_tumor(_rng(seed, _TUMOR, origin), _phenotype(patient), anatomy)
    return grown(spec, _rng(seed, _GROWTH, patient.index)) if patient.followup is not None else spec


def _phenotype(patient: PlannedPatient) -> Phenotype:
    """The plan's phenotype, or for a hand-made plan without one a fixed draw of its class."""
    if patient.phenotype is not None:
        return patient.phenotype
    origin = patient.base_index if patient.followup is not None else patient.index
    return draw_phenotype(np.random.default_rng([_PHENOTYPE, origin, int(patient.mutant_like)]), patient.mutant_like)


def _rng(seed: int, stream: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, stream, index])


def _check_counts(n_patients: int, crossover: float, mutant_fraction: float) -> None:
    if n_patients < 1:
        raise ValueError(f"a phantom cohort needs at least 1 patient, got {n_patients}")
    for name, value in (("crossover", crossover), ("mutant_fraction", mutant_fraction)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must lie in [0, 1], got {value}")


def _default_extra(n_patients: int) -> int:
    """About 1 % of the cohort, at least one from 20 patients on (UCSF-PDGM: 6 of 501 follow-ups)."""
    return max(round(0.01 * n_patients), 1) if n_patients >= 20 else 0


def _class_list(n_patients: int, mutant_fraction: float) -> list[str]:
    n_mutant = round(n_patients * mutant_fraction)
    if n_patients >= 2:
        n_mutant = min(max(n_mutant, 1), n_patients - 1)
    return ["mutant"] * n_mutant + ["wildtype"] * (n_patients - n_mutant)


def _phenotype_of(rng: np.random.Generator, idh: str, crossover: float) -> tuple[bool, Phenotype]:
    """Which class's distribution a patient's phenotype comes from, and the phenotype.

    A labelled patient crosses over with probability ``crossover``, independently of the others
    (so the oracle's mixture likelihood is exact); unknown-IDH patients look mutant at 25 %.
    """
    u = rng.random()
    if idh == "unknown":
        mutant_like = u < UNKNOWN_MUTANT_LIKE
    else:
        mutant_like = (idh == "mutant") != (u < crossover)
    return mutant_like, draw_phenotype(rng, mutant_like)


def _non_contiguous_numbers(rng: np.random.Generator, count: int) -> np.ndarray:
    """Patient numbers from 4 upwards with occasional gaps, as in UCSF-PDGM (0004, 0005, 0007...)."""
    steps = 1 + (rng.random(count) < 0.1) * rng.integers(1, 4, size=count)
    steps[0] = 0
    return 4 + np.cumsum(steps)


def _with_followups(rng: np.random.Generator, baselines: list[PlannedPatient],
                    n_followups: int) -> list[PlannedPatient]:
    """Insert each follow-up re-scan right after its base patient's row."""
    labelled = [p for p in baselines if p.idh != "unknown"]
    if n_followups > len(labelled):
        raise ValueError(f"{n_followups} follow-ups requested but only {len(labelled)} labelled patients")
    bases = sorted(rng.choice(len(labelled), size=n_followups, replace=False)) if n_followups else []
    followups = {}
    for k, base_position in enumerate(bases):
        base = labelled[base_position]
        tag = f"FU{int(rng.integers(7, 400)):03d}d"
        index = len(baselines) + k
        followups[base.index] = PlannedPatient(index, base.number, base.idh, base.mutant_like, tag, base.index,
                                               base.phenotype)
    ordered = []
    for patient in baselines:
        ordered.append(patient)
        if patient.index in followups:
            ordered.append(followups[patient.index])
    return ordered
