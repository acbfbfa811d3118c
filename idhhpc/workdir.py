"""Where each stage reads and writes inside a job's work dir (the contract in DESIGN.md)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from idhhpc.ids import validate_patient_id


@dataclass(frozen=True)
class WorkDir:
    root: Path

    @property
    def manifest(self) -> Path:
        return self.root / "cohort" / "manifest.csv"

    @property
    def quarantine(self) -> Path:
        return self.root / "cohort" / "quarantine.csv"

    @property
    def shards(self) -> Path:
        return self.root / "shards"

    @property
    def index(self) -> Path:
        return self.shards / "index.json"

    @property
    def splits(self) -> Path:
        return self.root / "splits.json"

    @property
    def resolved_config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def best_config(self) -> Path:
        return self.root / "best_config.yaml"

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    @property
    def explanations(self) -> Path:
        return self.reports / "explain"

    @property
    def launches(self) -> Path:
        return self.root / "launches"

    @property
    def tracking_spool(self) -> Path:
        return self.root / "tracking-spool"

    def checkpoints(self, run_name: str) -> Path:
        return self.root / "checkpoints" / validate_patient_id(run_name)

    def patient_report(self, patient_id: str) -> Path:
        return self.explanations / validate_patient_id(patient_id)
