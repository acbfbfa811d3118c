"""Names every stage agrees on: classes, modalities, tumour labels, stages and file names.

One home for them (as torchio keeps its own in ``constants.py``), so a spelling changes in one
place and no module has to import another stage just to learn what a file is called.
"""

from __future__ import annotations

# --- labels ---------------------------------------------------------------------------------

WILDTYPE, MUTANT = 0, 1
"""Label 0 is IDH wildtype, label 1 is IDH mutant (the positive class)."""
CLASS_NAMES = ("wildtype", "mutant")
"""``CLASS_NAMES[label]``; reports, metric keys and CAM file names use these spellings."""

# --- images ---------------------------------------------------------------------------------

MODALITIES = ("FLAIR", "T1", "T1c", "T2")
"""The four pre-operative sequences, in the channel order of every tensor the project writes."""
MODALITY_ALIASES: dict[str, tuple[str, ...]] = {
    "FLAIR": ("FLAIR",),
    "T1": ("T1",),
    "T1c": ("T1c", "T1gad", "T1ce", "T1Gd", "T1post"),
    "T2": ("T2",),
}
"""File-name spellings of each modality met in UCSF-PDGM copies and users' own folders."""
COORDINATE_CHANNELS = 3
"""With ``preprocess.coordinates`` the network input ends with the R, A, S position of each voxel."""
MAX_VOXELS = 2**26
"""Default ``preprocess.max_voxels``: the largest NIfTI volume read, and the largest cube its
longest side may pad to (a 406³ cube, 256 MiB per float32 file; a UCSF-PDGM volume, 240x240x155,
pads to a 240³ cube, a fifth of it). Files whose header claims more are refused unread."""
PATIENT_ROOTS_VARIABLE = "IDHHPC_PATIENT_ROOTS"
"""The folders (``os.pathsep``-separated) a served model may read ``patient_dir`` inputs from;
unset, it reads none (``idhhpc/data/roots.py``)."""
BRAIN_MASK_SUFFIX = "brain_segmentation"
TUMOR_MASK_SUFFIX = "tumor_segmentation"

NECROSIS, EDEMA, ENHANCING = 1, 2, 4
"""UCSF-PDGM / BraTS tumour labels (there is no label 3)."""
TUMOR_LABELS = (0, NECROSIS, EDEMA, ENHANCING)
TUMOR_SUBREGIONS = {"necrosis": NECROSIS, "edema": EDEMA, "enhancing": ENHANCING}

# --- external cohorts -----------------------------------------------------------------------------

EGD_SUBJECTS_DIR = "SUBJECTS"
EGD_METADATA_DIR = "METADATA"
EGD_BRAIN_MASK = "Brain_mask.nii.gz"
"""The Erasmus Glioma Database's one brain mask for every subject (all are registered to an atlas)."""
EGD_SUBJECT_METADATA = "metadata.json"
EGD_TUMOR_MASK = "MASK.nii.gz"
EGD_UNKNOWN = -1
"""``Genetic_and_Histological_labels.IDH`` of a subject whose IDH status is unknown."""
LEAKAGE_THRESHOLD = 0.7
"""Image-content similarity at or above which an external patient counts as a training patient
(:mod:`idhhpc.data.leakage`); measured on phantoms in benchmarks/RESULTS.md, "External"."""
SITES_FILE = "sites.csv"
"""An external cohort's per-patient site facts (manufacturer, field strength, age)."""

# --- clinical covariates -----------------------------------------------------------------------

CLINICAL_COLUMNS: dict[str, tuple[str, ...]] = {"age": ("Age at MRI", "age", "Age")}
"""Column spellings of each clinical covariate (``evaluate.clinical``): UCSF-PDGM's metadata CSV
writes ``Age at MRI``, a users' cases CSV ``age``."""

# --- the pipeline -------------------------------------------------------------------------------

EPOCH_COUNTERS = ("epoch", "optimizer_step")
"""Counters in the trainer's per-epoch records: the x axis of training curves, never a curve."""

STAGES = ("cohort", "preprocess", "split", "features", "tune", "cv", "fit", "evaluate", "explain", "external")
"""Every stage, in pipeline order."""

# --- file names inside a work dir (``idhhpc.workdir.WorkDir`` composes the paths) -------------

MANIFEST_FILE = "manifest.csv"
QUARANTINE_FILE = "quarantine.csv"
SHARD_INDEX_FILE = "index.json"
SPLITS_FILE = "splits.json"
RESOLVED_CONFIG_FILE = "config.yaml"
TRAINED_CONFIG_FILE = "trained_config.yaml"
"""Beside a run's ``model.pt``: the job as that run trained, after tuned values and the memory plan."""
BEST_CONFIG_FILE = "best_config.yaml"
SELECTION_FILE = "selection.json"
MODEL_FILE = "model.pt"
BEST_CHECKPOINT = "best.pt"
LAST_CHECKPOINT = "last.pt"
REPORT_FILE = "report.md"
REPORT_HTML_FILE = "report.html"
METRICS_FILE = "metrics.json"
PREDICTIONS_FILE = "predictions.csv"
OOF_PREDICTIONS_FILE = "oof_predictions.csv"
CLINICAL_FUSION_FILE = "clinical_fusion.json"
CV_SUMMARY_FILE = "summary.json"
GALLERY_FILE = "gallery.md"
GALLERY_HTML_FILE = "gallery.html"
CAM_STATISTICS_FILE = "cam_statistics.json"
PREDICTION_FILE = "prediction.json"
"""What ``python -m idhhpc.predict`` writes beside its overlays: the result and the files it wrote."""
SEGMENTATION_FILE = "segmentation.nii.gz"
"""A multi-task model's predicted compartments (0, 1, 2, 4) on the patient's native grid (``predict``)."""
EXTERNAL_SUMMARY_FILE = "external.json"
MLFLOW_STORE_FILE = "mlflow.db"
MLFLOW_ARTIFACT_DIR = "mlartifacts"
LOCK_FILE = ".idhhpc.lock"
"""Who runs in a work dir now (a local launch or a Slurm chain): see ``idhhpc.hpc.lock``."""
