"""Every path a stage reads or writes inside a job's work dir (the contract in docs/DESIGN.md).

File names come from :mod:`idhhpc.constants`; only this class puts them together, so a stage
asks for ``work.report`` instead of spelling ``reports/report.md`` itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from idhhpc import constants as names
from idhhpc.ids import validate_patient_id


@dataclass(frozen=True)
class WorkDir:
    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    # --- cohort, shards, splits, configuration ---------------------------------------------------
    @property
    def manifest(self) -> Path:
        return self.root / "cohort" / names.MANIFEST_FILE

    @property
    def quarantine(self) -> Path:
        return self.root / "cohort" / names.QUARANTINE_FILE

    @property
    def shards(self) -> Path:
        return self.root / "shards"

    @property
    def index(self) -> Path:
        return self.shards / names.SHARD_INDEX_FILE

    @property
    def splits(self) -> Path:
        return self.root / names.SPLITS_FILE

    @property
    def resolved_config(self) -> Path:
        return self.root / names.RESOLVED_CONFIG_FILE

    @property
    def stamps(self) -> Path:
        """What each step's last successful job was made from (:mod:`idhhpc.hpc.stamps`)."""
        return self.root / "stamps"

    @property
    def best_config(self) -> Path:
        return self.root / names.BEST_CONFIG_FILE

    @property
    def features(self) -> Path:
        """The frozen-prefix feature caches, one folder per cache key."""
        return self.root / "features"

    @property
    def tune(self) -> Path:
        return self.root / "tune"

    # --- training runs ---------------------------------------------------------------------------
    def checkpoints(self, run_name: str) -> Path:
        """The folder of one training run (``fold-0``, ``fit``)."""
        return self.root / "checkpoints" / validate_patient_id(run_name)

    def selection(self, run_name: str) -> Path:
        return self.checkpoints(run_name) / names.SELECTION_FILE

    def exported_model(self, run_name: str) -> Path:
        return self.checkpoints(run_name) / names.MODEL_FILE

    def trained_config(self, run_name: str) -> Path:
        """The job as the run trained (tuned values, memory plan, restart seed applied)."""
        return self.checkpoints(run_name) / names.TRAINED_CONFIG_FILE

    def last_checkpoint(self, run_name: str) -> Path:
        return self.checkpoints(run_name) / names.LAST_CHECKPOINT

    # --- reports ---------------------------------------------------------------------------------
    @property
    def reports(self) -> Path:
        return self.root / "reports"

    @property
    def report(self) -> Path:
        return self.reports / names.REPORT_FILE

    @property
    def metrics(self) -> Path:
        return self.reports / names.METRICS_FILE

    @property
    def predictions(self) -> Path:
        return self.reports / names.PREDICTIONS_FILE

    @property
    def cv_reports(self) -> Path:
        """Out-of-fold figures of the cv stage: every non-test patient scored by the fold that held it out."""
        return self.reports / "cv"

    @property
    def oof_predictions(self) -> Path:
        return self.cv_reports / names.OOF_PREDICTIONS_FILE

    @property
    def cv_summary(self) -> Path:
        return self.cv_reports / names.CV_SUMMARY_FILE

    @property
    def clinical_fusion(self) -> Path:
        """The imaging + clinical model (``evaluate.clinical``), fitted on the out-of-fold predictions."""
        return self.reports / names.CLINICAL_FUSION_FILE

    @property
    def explanations(self) -> Path:
        return self.reports / "explain"

    @property
    def gallery(self) -> Path:
        return self.explanations / names.GALLERY_FILE

    def patient_report(self, patient_id: str) -> Path:
        return self.explanations / validate_patient_id(patient_id)

    # --- external cohorts ---------------------------------------------------------------------------
    def external(self, name: str) -> Path:
        """The work dir of one external cohort (``data.layout`` of its own, the training job's
        preprocessing): its ``cohort/``, ``shards/`` and ``reports/`` as a job's, via ``WorkDir``."""
        return self.root / "external" / validate_patient_id(name)

    @property
    def sites(self) -> Path:
        """Per-patient site facts (manufacturer, field strength, age) where the layout records them."""
        return self.root / "cohort" / names.SITES_FILE

    @property
    def external_summary(self) -> Path:
        return self.reports / names.EXTERNAL_SUMMARY_FILE

    # --- bookkeeping -------------------------------------------------------------------------------
    @property
    def launches(self) -> Path:
        return self.root / "launches"

    @property
    def tracking_spool(self) -> Path:
        return self.root / "tracking-spool"

    @property
    def lock(self) -> Path:
        return self.root / names.LOCK_FILE


FIT_RUN = "fit"
"""The final fit's run name (``checkpoints/fit/``)."""


def fold_run_name(fold: int) -> str:
    """The run name of cross-validation fold ``fold`` (``checkpoints/fold-0/``)."""
    return f"fold-{fold}"
