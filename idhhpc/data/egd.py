"""The Erasmus Glioma Database (EGD) as distributed, read into the same cohort as UCSF-PDGM.

On disk (van der Voort et al., Data in Brief 2021)::

    SUBJECTS/EGD-0001/{FLAIR,T1,T1GD,T2}.nii.gz   the four sequences, registered to an atlas
    SUBJECTS/EGD-0001/MASK.nii.gz                 the tumour segmentation (absent for some)
    SUBJECTS/EGD-0001/metadata.json               Genetic_and_Histological_labels.IDH (1 mutant,
                                                  0 wildtype, -1 unknown), Clinical_data.Age,
                                                  Scan_characteristics (manufacturer, field strength)
    METADATA/Brain_mask.nii.gz                    one brain mask for every subject (the atlas's)

Every subject goes through :func:`idhhpc.data.cohort.case_from_folder` (the modality discovery
and header checks of every other layout; ``T1GD`` is a spelling of ``T1c``), with the shared
brain mask checked against its grid too. A subject without ``MASK.nii.gz`` is kept (it is
scored; it has no Dice and, with ``preprocess.roi: tumor``, preprocessing says why it cannot be
cropped). What cannot be used is quarantined with the reason.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from idhhpc.constants import (
    EGD_BRAIN_MASK,
    EGD_METADATA_DIR,
    EGD_SUBJECT_METADATA,
    EGD_SUBJECTS_DIR,
    EGD_TUMOR_MASK,
    EGD_UNKNOWN,
    MAX_VOXELS,
)
from idhhpc.data.cohort import Cohort, case_from_folder, check_headers
from idhhpc.data.ucsf_pdgm import find_optional
from idhhpc.ids import UnsafePatientId, validate_patient_id

LABELS_KEY = "Genetic_and_Histological_labels"
CLINICAL_KEY = "Clinical_data"
SCAN_KEY = "Scan_characteristics"
MAX_METADATA_BYTES = 1 << 20
"""A subject's metadata.json is a few hundred bytes; anything past 1 MiB is not one."""
SITE_FIELDS = ("manufacturer", "field_strength", "age")
"""Per-subject facts the external report groups by (manufacturer, field strength) or keeps."""


def subjects_dir(root: Path) -> Path:
    return Path(root) / EGD_SUBJECTS_DIR


def shared_brain_mask(root: Path) -> Path | None:
    """``METADATA/Brain_mask.nii.gz`` (or ``.nii``), when the download has it."""
    folder = Path(root) / EGD_METADATA_DIR
    return find_optional(folder, _stem(EGD_BRAIN_MASK)) if folder.is_dir() else None


def _stem(name: str) -> str:
    return name.split(".", 1)[0]


def subject_folders(root: Path) -> list[Path]:
    """Every folder under ``SUBJECTS/`` (a data set without that folder is refused, named)."""
    folder = subjects_dir(root)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: EGD folder SUBJECTS/ not found (data.layout egd expects "
                                "ROOT/SUBJECTS/<EGD-id>/ and ROOT/METADATA/Brain_mask.nii.gz)")
    return sorted(p for p in folder.iterdir() if p.is_dir())


def metadata_files(root: Path) -> list[Path]:
    """The per-subject ``metadata.json`` files: what an EGD manifest is made from."""
    return [p / EGD_SUBJECT_METADATA for p in subject_folders(root) if (p / EGD_SUBJECT_METADATA).is_file()]


def discover_egd(root: Path, modalities: list[str], max_voxels: int = MAX_VOXELS) -> Cohort:
    """Every subject of an EGD download, with its label, files and headers checked."""
    cohort, brain_mask = Cohort(), shared_brain_mask(root)
    for folder in subject_folders(root):
        try:
            patient_id = validate_patient_id(folder.name)
        except UnsafePatientId as err:
            cohort.reject(folder.name[:128], f"{folder}: {err}")
            continue
        label, problem = subject_label(folder)
        if problem:
            cohort.reject(patient_id, problem)
            continue
        case, problem = subject_case(patient_id, label, folder, modalities, brain_mask, max_voxels)
        cohort.cases.append(case) if case else cohort.reject(patient_id, problem)
    return cohort


def subject_case(patient_id: str, label: int, folder: Path, modalities: list[str], brain_mask: Path | None,
                 max_voxels: int = MAX_VOXELS):
    """(case, "") or (None, reason): the shared discovery, with the shared brain mask where it
    fits the subject's grid (a subject not on the atlas grid is brain-masked from its images, as
    preprocessing does for any patient without a mask file)."""
    case, problem = case_from_folder(patient_id, label, folder, modalities, False,
                                     tumor_mask=find_optional(folder, _stem(EGD_TUMOR_MASK)), max_voxels=max_voxels)
    if case is None or brain_mask is None:
        return case, problem
    masked = dataclasses.replace(case, brain_mask=brain_mask)
    return (case if check_headers(masked, max_voxels=max_voxels) else masked), ""


def read_subject_metadata(folder: Path) -> tuple[dict[str, Any] | None, str]:
    """A subject's ``metadata.json`` as a dict, or (None, why not)."""
    path = folder / EGD_SUBJECT_METADATA
    if not path.is_file():
        return None, f"{path}: missing {EGD_SUBJECT_METADATA} (no IDH label)"
    if path.stat().st_size > MAX_METADATA_BYTES:
        return None, f"{path}: {path.stat().st_size} bytes, larger than {MAX_METADATA_BYTES} for a metadata file"
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        return None, f"{path}: not valid JSON ({err})"
    if not isinstance(document, dict):
        return None, f"{path}: expected a JSON object, got {type(document).__name__}"
    return document, ""


def subject_label(folder: Path) -> tuple[int | None, str]:
    """``Genetic_and_Histological_labels.IDH`` as 0/1, or (None, the reason it is not usable)."""
    document, problem = read_subject_metadata(folder)
    if document is None:
        return None, problem
    where = folder / EGD_SUBJECT_METADATA
    value = _section(document, LABELS_KEY).get("IDH")
    if value is None:
        return None, f"{where}: no {LABELS_KEY}.IDH"
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value not in (0, 1, EGD_UNKNOWN):
        return None, f"{where}: unrecognised IDH value {value!r} (EGD uses 1 mutant, 0 wildtype, -1 unknown)"
    if value == EGD_UNKNOWN:
        return None, f"{where}: unlabeled IDH status (-1, unknown in EGD)"
    return int(value), ""


def site_facts(folder: Path) -> dict[str, str]:
    """Manufacturer, field strength and age of one subject, as text ('' where not recorded)."""
    document, _ = read_subject_metadata(folder)
    if document is None:
        return dict.fromkeys(SITE_FIELDS, "")
    scan, clinical = _section(document, SCAN_KEY), _section(document, CLINICAL_KEY)
    return {"manufacturer": _text(_first(scan, "Manufacturer", "manufacturer")),
            "field_strength": _text(_first(scan, "Field_strength", "FieldStrength", "field_strength",
                                           "MagneticFieldStrength")),
            "age": _text(_first(clinical, "Age", "age"))}


def cohort_site_facts(root: Path) -> dict[str, dict[str, str]]:
    """:func:`site_facts` of every subject folder, keyed by its ID."""
    return {folder.name: site_facts(folder) for folder in subject_folders(root)}


def _section(document: dict[str, Any], key: str) -> dict[str, Any]:
    value = document.get(key)
    return value if isinstance(value, dict) else {}


def _first(section: dict[str, Any], *keys: str) -> Any:
    return next((section[k] for k in keys if section.get(k) not in (None, "")), None)


def _text(value: Any) -> str:
    if value is None or isinstance(value, (dict, list)):
        return ""
    return " ".join(str(value).split())[:64]
