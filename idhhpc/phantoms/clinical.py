"""Clinical metadata rows for phantom patients, spelled like ``UCSF-PDGM-metadata_v2.csv``.

Values depend on the true IDH class (not on the imaging phenotype, which may cross over):
IDH-mutant patients are younger, live longer, are more often MGMT-methylated, and a share of
them are 1p/19q-codeleted oligodendrogliomas.
"""

from __future__ import annotations

import csv
import io

import numpy as np

METADATA_COLUMNS = (
    "ID", "Sex", "Age at MRI", "WHO CNS Grade", "Final pathologic diagnosis (WHO 2021)", "MGMT status",
    "MGMT index", "1p/19q", "IDH", "1-dead 0-alive", "OS", "EOR", "Biopsy prior to imaging", "BraTS21 ID",
    "BraTS21 Segmentation Cohort", "BraTS21 MGMT Cohort",
)
MUTANT_SPELLINGS = ("IDH1 p.R132H", "mutated (NOS)", "IDH1 p.R132C", "IDH1 p.R132G", "IDH2 p.R172K")
_MUTANT_SPELLING_P = (0.72, 0.12, 0.06, 0.05, 0.05)


def csv_id(number: int, followup: str | None = None) -> str:
    """Metadata CSV spelling: three digits (``UCSF-PDGM-004``), follow-ups as ``..._FU016d``."""
    return f"UCSF-PDGM-{number:03d}" + (f"_{followup}" if followup else "")


def folder_id(number: int, followup: str | None = None) -> str:
    """Folder and file prefix spelling: four digits (``UCSF-PDGM-0004``)."""
    return f"UCSF-PDGM-{number:04d}" + (f"_{followup}" if followup else "")


def clinical_row(rng: np.random.Generator, number: int, idh: str) -> dict[str, str]:
    """One metadata row; ``idh`` is 'wildtype', 'mutant' or 'unknown' (spelled for the CSV here)."""
    mutant = idh == "mutant" or (idh == "unknown" and rng.random() < 0.2)
    grade, diagnosis, codeletion = _diagnosis(rng, mutant, known=idh != "unknown")
    mgmt_positive = rng.random() < (0.8 if mutant else 0.45)
    dead = rng.random() < (0.25 if mutant else 0.7)
    return {
        "ID": csv_id(number),
        "Sex": "M" if rng.random() < 0.58 else "F",
        "Age at MRI": str(int(np.clip(rng.normal(40 if mutant else 62, 12), 18, 94))),
        "WHO CNS Grade": str(grade),
        "Final pathologic diagnosis (WHO 2021)": diagnosis,
        "MGMT status": "positive" if mgmt_positive else "negative",
        "MGMT index": str(int(rng.integers(1, 18))) if mgmt_positive else "0",
        "1p/19q": codeletion,
        "IDH": _idh_spelling(rng, idh),
        "1-dead 0-alive": "1" if dead else "0",
        "OS": str(int(rng.gamma(2.0, 900 if mutant else 260))),
        "EOR": str(rng.choice(["GTR", "STR", "biopsy"], p=[0.45, 0.4, 0.15])),
        "Biopsy prior to imaging": "Yes" if rng.random() < 0.08 else "No",
        **_brats_columns(rng),
    }


def followup_row(base: dict[str, str], number: int, followup: str) -> dict[str, str]:
    """The base patient's row under the follow-up ID; the clinical facts do not change."""
    return {**base, "ID": csv_id(number, followup)}


def metadata_csv_text(rows: list[dict[str, str]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=METADATA_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _diagnosis(rng: np.random.Generator, mutant: bool, known: bool) -> tuple[int, str, str]:
    if not known:
        return int(rng.choice([3, 4])), "Diffuse glioma, NOS", "unknown"
    if not mutant:
        if rng.random() < 0.9:
            return 4, "Glioblastoma, IDH-wildtype", "" if rng.random() < 0.6 else "intact"
        return int(rng.choice([2, 3])), "Astrocytoma, IDH-wildtype", "intact"
    if rng.random() < 0.3:
        return int(rng.choice([2, 3])), "Oligodendroglioma, IDH-mutant, 1p/19q-codeleted", "co-deletion"
    return int(rng.choice([2, 3, 4], p=[0.4, 0.35, 0.25])), "Astrocytoma, IDH-mutant", "intact"


def _idh_spelling(rng: np.random.Generator, idh: str) -> str:
    if idh == "wildtype":
        return "wildtype"
    if idh == "unknown":
        return "unknown" if rng.random() < 0.5 else ""
    return str(rng.choice(MUTANT_SPELLINGS, p=_MUTANT_SPELLING_P))


def _brats_columns(rng: np.random.Generator) -> dict[str, str]:
    if rng.random() < 0.35:
        return {"BraTS21 ID": "", "BraTS21 Segmentation Cohort": "", "BraTS21 MGMT Cohort": ""}
    cohort = "Training" if rng.random() < 0.85 else "Validation"
    return {
        "BraTS21 ID": f"BraTS2021_{int(rng.integers(0, 1700)):05d}",
        "BraTS21 Segmentation Cohort": cohort,
        "BraTS21 MGMT Cohort": cohort if rng.random() < 0.8 else "",
    }
