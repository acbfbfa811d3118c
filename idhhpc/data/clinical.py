"""Clinical covariates of each patient (``evaluate.clinical``), read from the cohort's own table.

UCSF-PDGM keeps them in its metadata CSV (``Age at MRI``), a users' cohort in its cases CSV
(``age``); the spellings live in :data:`idhhpc.constants.CLINICAL_COLUMNS`. Only the late fusion
of the evaluation reads them: no image model ever does, so every imaging figure stays imaging-only.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from idhhpc.config import JobConfig
from idhhpc.constants import CLINICAL_COLUMNS
from idhhpc.data.ucsf_pdgm import find_metadata_csv, parse_id

PLAUSIBLE = {"age": (0.0, 120.0)}
"""Values outside these ranges are typing errors (days for years, a missing decimal point)."""


def clinical_table(config: JobConfig) -> Path:
    """The file the covariates come from: the metadata CSV of UCSF-PDGM, or the cases CSV."""
    data = config.data
    if data.layout == "csv":
        return data.cases_csv
    return data.metadata_csv or find_metadata_csv(data.root)


def read_covariates(config: JobConfig, patient_ids: list[str]) -> np.ndarray:
    """``(len(patient_ids), len(evaluate.clinical))`` float array, in the order asked for.

    Raises ``ValueError`` naming the file, the column and the patients when a covariate is
    missing, not a number, or implausible: a fused model cannot score a patient without it.
    """
    names = list(config.evaluate.clinical)
    path = clinical_table(config)
    with open(path, newline="", encoding="utf-8-sig") as fh:
        rows = list(csv.DictReader(fh))
    header = list(rows[0]) if rows else []
    id_column = "patient_id" if config.data.layout == "csv" else "ID"
    columns = {}
    for name in names:
        columns[name] = next((c for c in CLINICAL_COLUMNS[name] if c in header), None)
        if columns[name] is None:
            raise ValueError(f"{path}: evaluate.clinical needs {name!r}, but no column "
                             f"{' / '.join(repr(c) for c in CLINICAL_COLUMNS[name])} is there")
    by_patient = {_canonical(row[id_column]): (line, row) for line, row in enumerate(rows, start=2)
                  if id_column in row and row[id_column]}
    values, problems = np.full((len(patient_ids), len(names)), np.nan), []
    for i, pid in enumerate(patient_ids):
        line, row = by_patient.get(_canonical(pid), (None, None))
        for j, name in enumerate(names):
            text = "" if row is None else (row.get(columns[name]) or "").strip()
            value = _number(text)
            low, high = PLAUSIBLE[name]
            if value is None or not low <= value <= high:
                where = "no row" if row is None else f"line {line}: {repr(text) if text else 'empty'}"
                problems.append(f"{pid} ({where})")
            else:
                values[i, j] = value
    if problems:
        raise ValueError(f"{path}: {', '.join(names)} missing or not a plausible number for {len(problems)} "
                         f"patient(s): {'; '.join(problems[:5])}")
    return values


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _canonical(patient_id: str) -> str:
    """UCSF-PDGM IDs in any spelling (3 or 4 digits); a follow-up scan shares its patient's row."""
    parsed = parse_id(patient_id)
    return parsed.canonical if parsed is not None else patient_id.strip()
