"""Out-of-fold figures: every non-test patient scored once, by the fold model that never saw it.

The pooled out-of-fold AUC is the honest estimate of how well a training recipe generalises on
this cohort (the test split is small; its AUC is noisy), and the figure every training change is
judged by. Beside it, on exactly the same patients: the classical baseline on the same folds and,
for phantoms, the Bayes-optimal score.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

from idhhpc.evaluate.bootstrap import bootstrap_ci

CONFIDENCE = 0.95


@dataclass
class OutOfFold:
    """Pooled out-of-fold predictions, in patient order."""

    patient_ids: list[str]
    folds: list[int]
    labels: list[int]
    probs: list[float]

    def csv_text(self) -> str:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["patient_id", "fold", "label", "prob_mutant"])
        for row in zip(self.patient_ids, self.folds, self.labels, self.probs):
            writer.writerow([row[0], row[1], row[2], f"{row[3]:.6f}"])
        return buffer.getvalue()


def pool_folds(selections: list[dict[str, Any]], expected: list[str]) -> OutOfFold:
    """Pool the folds' validation predictions; each patient of ``expected`` (the non-test patients)
    must appear exactly once, or the folds are not a partition and no out-of-fold figure holds."""
    rows = [(pid, fold, int(label), float(prob)) for fold, selection in enumerate(selections)
            for pid, label, prob in zip(selection["val"]["patient_ids"], selection["val"]["labels"],
                                        selection["val"]["probs"])]
    seen = [row[0] for row in rows]
    duplicates = sorted({pid for pid in seen if seen.count(pid) > 1})
    missing, extra = sorted(set(expected) - set(seen)), sorted(set(seen) - set(expected))
    if duplicates or missing or extra:
        raise ValueError(f"fold validation sets do not partition the non-test patients: duplicates {duplicates[:5]}, "
                         f"missing {missing[:5]}, not expected {extra[:5]}")
    rows.sort()
    return OutOfFold(*(list(column) for column in zip(*rows)))


@dataclass
class Scored:
    """An AUC with its bootstrap interval on a set of patients."""

    auc: float
    low: float
    high: float
    n: int

    @classmethod
    def of(cls, labels: list[int], scores: list[float], n_resamples: int, seed: int) -> "Scored":
        if len(set(labels)) < 2:
            return cls(math.nan, math.nan, math.nan, len(labels))
        ranks = _to_unit_interval(np.asarray(scores, dtype=np.float64))
        low, high = bootstrap_ci(labels, ranks, 0.5, n_resamples=n_resamples, seed=seed, alpha=1 - CONFIDENCE)["auc"]
        return cls(float(roc_auc_score(labels, scores)), low, high, len(labels))

    def text(self) -> str:
        return "n/a" if math.isnan(self.auc) else f"{self.auc:.3f} [{self.low:.3f}, {self.high:.3f}]"


def _to_unit_interval(scores: np.ndarray) -> np.ndarray:
    """Any monotone score (a log-likelihood ratio, say) as values in [0, 1] with the same ranking."""
    low, high = scores.min(), scores.max()
    return (scores - low) / (high - low) if high > low else np.full_like(scores, 0.5)


@dataclass
class CrossValidationSummary:
    network: Scored
    baseline: Scored | None = None
    oracle: Scored | None = None
    oracle_coverage: int = 0
    threshold: float = 0.5
    per_fold_auc: list[float] = field(default_factory=list)
    splits_fingerprint: str = ""
    clinical_inputs: list[str] = field(default_factory=list)
    """``evaluate.clinical``: the covariates of the two rows below (empty: none)."""
    clinical_only: Scored | None = None
    with_clinical: Scored | None = None
    takeoff_restarts: list[int] = field(default_factory=list)
    """Per fold: how often the take-off rule restarted its training (``train.takeoff_*``)."""
    dice: dict[str, float] = field(default_factory=dict)
    """A multi-task network's mean validation Dice per compartment over the folds (else empty)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def metrics(self) -> dict[str, float]:
        """MLflow metrics, finite values only."""
        values = {"cv/oof_auc": self.network.auc, "cv/oof_auc_low": self.network.low,
                  "cv/oof_auc_high": self.network.high}
        if self.baseline:
            values |= {"cv/baseline_oof_auc": self.baseline.auc}
        if self.oracle:
            values |= {"cv/oracle_auc": self.oracle.auc, "cv/gap_to_oracle": self.oracle.auc - self.network.auc}
        if self.with_clinical and self.clinical_only:
            values |= {"cv/oof_auc_with_clinical": self.with_clinical.auc, "cv/clinical_only_oof_auc": self.clinical_only.auc}
        values |= {f"cv/dice_{name}": value for name, value in self.dice.items()}
        if self.takeoff_restarts:
            values["cv/takeoff_restarts"] = sum(self.takeoff_restarts)
        return {k: float(v) for k, v in values.items() if math.isfinite(v)}
