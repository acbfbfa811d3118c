"""Cohort ingestion: find every patient, parse its label, check its files, explain every exclusion.

Two layouts are read: the UCSF-PDGM download as it is on disk, and a generic CSV
(``patient_id,label,flair,t1,t1c,t2[,tumor_mask,brain_mask]``) for users' own data. Both end in
the same ``cohort/manifest.csv`` (which is itself a generic CSV) and ``cohort/quarantine.csv``.
Checks here only read NIfTI headers; voxel-level problems are caught by preprocessing.
"""

from __future__ import annotations

import csv
import dataclasses
import io
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from idhhpc.atomic import atomic_write_text
from idhhpc.constants import BRAIN_MASK_SUFFIX, MAX_VOXELS, TUMOR_MASK_SUFFIX
from idhhpc.data import ucsf_pdgm
from idhhpc.data.cases import CaseFiles
from idhhpc.data.nifti_reading import NiftiHeader, UnreadableNifti, read_header
from idhhpc.ids import UnsafePatientId, validate_patient_id

MASK_COLUMNS = ("tumor_mask", "brain_mask")


@dataclass
class Cohort:
    """Patients that passed ingestion, and (patient_id, reason) for every one that did not."""

    cases: list[CaseFiles] = field(default_factory=list)
    quarantined: list[tuple[str, str]] = field(default_factory=list)

    def reject(self, patient_id: str, reason: str) -> None:
        self.quarantined.append((patient_id, reason))


def discover_ucsf_pdgm(root: Path, metadata_csv: Path | None, modalities: list[str], bias_corrected: bool,
                       max_voxels: int = MAX_VOXELS) -> Cohort:
    """Match metadata rows to ``*_nifti`` folders, handling every UCSF-PDGM quirk."""
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: UCSF-PDGM folder not found")
    metadata_csv = metadata_csv or ucsf_pdgm.find_metadata_csv(root)
    cohort = Cohort()
    labels, listed = _labels_from_metadata(metadata_csv, cohort)
    folders = _patient_folders(root, cohort)
    for patient_id in sorted(set(labels) - set(folders)):
        cohort.reject(patient_id, f"metadata row in {metadata_csv.name} has no image folder {patient_id}_nifti in {root}")
    for patient_id in sorted(set(folders) - listed):
        cohort.reject(patient_id, f"image folder {folders[patient_id]} has no row in {metadata_csv.name}")
    for patient_id in sorted(set(labels) & set(folders)):
        case, problem = case_from_folder(patient_id, labels[patient_id], folders[patient_id], modalities, bias_corrected,
                                         max_voxels=max_voxels)
        cohort.cases.append(case) if case else cohort.reject(patient_id, problem)
    return cohort


def _labels_from_metadata(metadata_csv: Path, cohort: Cohort) -> tuple[dict[str, int], set[str]]:
    """Labels of usable rows, and every patient the CSV mentions (labeled or not)."""
    rows = _read_csv(metadata_csv)
    if rows and not {"ID", "IDH"} <= set(rows[0]):
        raise ValueError(f"{metadata_csv}: expected columns 'ID' and 'IDH', found {', '.join(rows[0])}")
    counts = Counter(p.canonical for r in rows if (p := ucsf_pdgm.parse_id(r["ID"])) and not p.is_followup)
    labels: dict[str, int] = {}
    for line, row in enumerate(rows, start=2):
        parsed = ucsf_pdgm.parse_id(row["ID"])
        if parsed is None:
            cohort.reject(row["ID"], f"{metadata_csv.name} line {line}: {row['ID']!r} is not a UCSF-PDGM ID")
        elif parsed.is_followup:
            cohort.reject(row["ID"], f"{metadata_csv.name} line {line}: follow-up scan of {parsed.canonical}, dropped as a duplicate patient")
        elif counts[parsed.canonical] > 1:
            cohort.reject(parsed.canonical, f"{metadata_csv.name} line {line}: duplicate patient id {parsed.canonical}")
        else:
            label, problem = ucsf_pdgm.parse_idh(row["IDH"])
            labels[parsed.canonical] = label if label is not None else -1
            if problem:
                cohort.reject(parsed.canonical, f"{metadata_csv.name} line {line}: {problem}")
    listed = set(labels) | set(counts)
    return {pid: label for pid, label in labels.items() if label >= 0}, listed


def _patient_folders(root: Path, cohort: Cohort) -> dict[str, Path]:
    folders: dict[str, Path] = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        raw = ucsf_pdgm.folder_id(folder)
        parsed = ucsf_pdgm.parse_id(raw) if raw else None
        if parsed is None:
            continue
        if parsed.is_followup:
            cohort.reject(raw, f"folder {folder.name}: follow-up scan of {parsed.canonical}, dropped as a duplicate patient")
        elif parsed.canonical in folders:
            cohort.reject(parsed.canonical, f"two image folders for one patient: {folders[parsed.canonical].name} and {folder.name}")
        else:
            folders[parsed.canonical] = folder
    return folders


def case_from_folder(patient_id: str, label: int | None, folder: Path, modalities: list[str] | tuple[str, ...],
                     bias: bool, affine_atol: float = 1e-3, tumor_mask: Path | None = None,
                     max_voxels: int = MAX_VOXELS,
                     confine: Callable[[Path], Path] | None = None) -> tuple[CaseFiles | None, str]:
    """One patient's files in a UCSF-PDGM folder (or a folder of files named by modality), with
    headers checked, as (case, "") or (None, the reason it cannot be used). ``tumor_mask``, when
    given, replaces the folder's tumour segmentation. ``confine`` maps every file found to the
    path to read (or raises) before a byte of it is read: the served model's allowed roots."""
    images = {}
    for modality in modalities:
        path, problem = ucsf_pdgm.find_modality(folder, modality, bias)
        if problem:
            return None, problem
        images[modality] = path
    case = CaseFiles(
        patient_id=patient_id,
        label=label,
        images=images,
        brain_mask=ucsf_pdgm.find_optional(folder, BRAIN_MASK_SUFFIX),
        tumor_mask=Path(tumor_mask) if tumor_mask is not None else ucsf_pdgm.find_optional(folder, TUMOR_MASK_SUFFIX),
    )
    if confine is not None:
        case = confined_case(case, confine)
    problem = check_headers(case, affine_atol, max_voxels)
    return (None, problem) if problem else (case, "")


def confined_case(case: CaseFiles, confine: Callable[[Path], Path]) -> CaseFiles:
    """``case`` with every file replaced by ``confine(file)``."""
    masks = {name: confine(path) if path is not None else None
             for name, path in (("brain_mask", case.brain_mask), ("tumor_mask", case.tumor_mask))}
    return dataclasses.replace(case, images={m: confine(p) for m, p in case.images.items()}, **masks)


def discover_csv(cases_csv: Path, modalities: list[str], max_voxels: int = MAX_VOXELS) -> Cohort:
    """Users' own data: one row per patient, paths relative to the CSV's folder."""
    rows = _read_csv(cases_csv)
    needed = {"patient_id", "label", *(m.lower() for m in modalities)}
    if rows and not needed <= set(rows[0]):
        raise ValueError(f"{cases_csv}: missing columns {', '.join(sorted(needed - set(rows[0])))}")
    cohort = Cohort()
    counts = Counter(row["patient_id"].strip() for row in rows)
    for line, row in enumerate(rows, start=2):
        case, problem = _case_from_row(row, cases_csv, modalities, counts, line, max_voxels)
        cohort.cases.append(case) if case else cohort.reject(row["patient_id"].strip(), problem)
    return cohort


def _case_from_row(row: dict, cases_csv: Path, modalities: list[str], counts: Counter, line: int,
                   max_voxels: int) -> tuple[CaseFiles | None, str]:
    where = f"{cases_csv.name} line {line}"
    patient_id = row["patient_id"].strip()
    try:
        validate_patient_id(patient_id)
    except UnsafePatientId as err:
        return None, f"{where}: {err}"
    if counts[patient_id] > 1:
        return None, f"{where}: duplicate patient id {patient_id}"
    label, problem = ucsf_pdgm.parse_idh(row["label"])
    if problem:
        return None, f"{where}: {problem}"
    base = cases_csv.parent
    images = {m: _resolve(base, row[m.lower()]) for m in modalities}
    missing = [f"{m} ({path})" for m, path in images.items() if path is None or not path.is_file()]
    if missing:
        return None, f"{where}: missing image file {', '.join(missing)}"
    masks = {c: _resolve(base, row.get(c, "")) for c in MASK_COLUMNS}
    absent = [f"{c} {p}" for c, p in masks.items() if p is not None and not p.is_file()]
    if absent:
        return None, f"{where}: missing {', '.join(absent)}"
    case = CaseFiles(patient_id, label, images, brain_mask=masks["brain_mask"], tumor_mask=masks["tumor_mask"])
    problem = check_headers(case, max_voxels=max_voxels)
    return (None, problem) if problem else (case, "")


def _resolve(base: Path, text: str | None) -> Path | None:
    if not text or not text.strip():
        return None
    path = Path(text.strip())
    return path if path.is_absolute() else (base / path).resolve()


def check_headers(case: CaseFiles, affine_atol: float = 1e-3, max_voxels: int = MAX_VOXELS) -> str | None:
    """Reject a patient whose files are unreadable, not 3-D, too large (``max_voxels``, see
    :mod:`idhhpc.data.nifti_reading`) or disagree in grid; reads headers only."""
    files = {**case.images, **{k: v for k, v in (("brain mask", case.brain_mask), ("tumor mask", case.tumor_mask)) if v}}
    reference: NiftiHeader | None = None
    for name, path in files.items():
        try:
            header = read_header(path, max_voxels)
        except UnreadableNifti as err:
            return f"unreadable file {err} ({name})"
        if reference is None:
            reference = header
        elif header.shape != reference.shape:
            return f"{path}: shape {header.shape} differs from {reference.path.name} {reference.shape}"
        elif not np.allclose(header.affine, reference.affine, atol=affine_atol):
            return f"{path}: affine differs from {reference.path.name} beyond {affine_atol}"
    return None


def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: CSV not found")
    text = path.read_text(encoding="utf-8-sig")
    return [{k.strip(): (v or "") for k, v in row.items() if k} for row in csv.DictReader(io.StringIO(text))]


def write_manifest(cases: list[CaseFiles], path: Path, modalities: list[str]) -> None:
    columns = ["patient_id", "label", *(m.lower() for m in modalities), *MASK_COLUMNS]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for case in cases:
        masks = [str(case.tumor_mask or ""), str(case.brain_mask or "")]
        writer.writerow([case.patient_id, case.label, *(str(case.images[m]) for m in modalities), *masks])
    atomic_write_text(path, buffer.getvalue())


def read_manifest(path: Path, modalities: list[str]) -> list[CaseFiles]:
    """The manifest is a generic cases CSV; rows were validated when it was written."""
    cases = []
    for row in _read_csv(path):
        images = {m: Path(row[m.lower()]) for m in modalities}
        masks = {c: Path(row[c]) if row.get(c) else None for c in MASK_COLUMNS}
        label = int(row["label"]) if row["label"] not in ("", "None") else None
        cases.append(CaseFiles(validate_patient_id(row["patient_id"]), label, images, masks["brain_mask"], masks["tumor_mask"]))
    return cases


def write_quarantine(entries: list[tuple[str, str]], path: Path) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["patient_id", "reason"])
    writer.writerows(entries)
    atomic_write_text(path, buffer.getvalue())


def read_quarantine(path: Path) -> list[tuple[str, str]]:
    return [(row["patient_id"], row["reason"]) for row in _read_csv(path)] if path.is_file() else []
