"""The Bayes-optimal score of each patient, when the cohort is a phantom whose optimum is known.

A phantom generator that knows how it drew each lesion can write the log-likelihood ratio of
the drawn phenotype (``idhhpc.phantoms`` writes ``oracle.csv``). Reports then show the optimum's
AUC on exactly the patients a model was scored on, so anyone can see how much of the learnable
signal a run captured. Real data has no oracle, and nothing here is ever a model input.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

from idhhpc.config import JobConfig
from idhhpc.data.ucsf_pdgm import parse_id

ORACLE_FILE = "oracle.csv"
SCORE_COLUMNS = ("llr", "log_likelihood_ratio", "prob_mutant", "posterior", "score", "oracle")
"""Any of these is a monotone Bayes score; only the ranking matters for an AUC."""


def oracle_path(config: JobConfig) -> Path | None:
    data = config.data
    if data.oracle_csv is not None:
        return data.oracle_csv
    folder = data.root if data.layout == "ucsf_pdgm" else (data.cases_csv.parent if data.cases_csv else None)
    candidate = folder / ORACLE_FILE if folder is not None else None
    return candidate if candidate is not None and candidate.is_file() else None


def load_oracle(config: JobConfig) -> dict[str, float]:
    """Bayes score by patient id (ids as the cohort stage spells them); empty without an oracle."""
    path = oracle_path(config)
    if path is None:
        return {}
    if not path.is_file():
        raise FileNotFoundError(f"data.oracle_csv {path}: file not found")
    with open(path, newline="", encoding="utf-8-sig") as fh:
        rows = list(csv.DictReader(fh))
    column = next((c for c in SCORE_COLUMNS if rows and c in rows[0]), None)
    if not rows or "patient_id" not in rows[0] or column is None:
        raise ValueError(f"{path}: an oracle needs columns patient_id and one of {', '.join(SCORE_COLUMNS)}")
    scores = {}
    for row in rows:
        value = row[column].strip()
        if value and not row.get("followup_of"):
            scores[_canonical(row["patient_id"])] = float(value)
    return {pid: score for pid, score in scores.items() if math.isfinite(score)}


def _canonical(patient_id: str) -> str:
    parsed = parse_id(patient_id)
    return parsed.canonical if parsed is not None and not parsed.is_followup else patient_id.strip()
