"""The tiny phantom jobs the tests run: a handful of patients, B0 at 32³, seconds per stage.

``tiny_config`` is the pipeline tests' job (16 patients at 48x48x32, 1 epoch, 2 folds);
``tiny_job`` is the same builder with the tuning tests' settings on top (2 tuning epochs, 4 trials).
"""

from __future__ import annotations

from pathlib import Path

from idhhpc.config import JobConfig, default_job_dict, load_job

SPACE = Path(__file__).resolve().parents[2] / "tune_spaces" / "focal_onecycle.yaml"

TINY_OVERRIDES = [
    "data.min_patients=8",
    "data.phantom={patients: 16, seed: 0, shape: [48, 48, 32], crossover: 0.1}",
    "preprocess={size: 32, shard_size: 6}",
    "split.folds=2",
    "model={variant: b0, trainable_stages: 2, freeze_batchnorm: true}",
    "train={epochs: 1, micro_batch: 2, accumulate: 1, num_workers: 0, patience: 2}",
    "evaluate.bootstrap=100",
    "explain.max_cases=2",
    "hpc.resources={cpus_per_task: 1, mem_gb: 2, time_min: 10}",
    # An even count: with micro_batch 2 an odd one leaves a BatchNorm batch of one at this tiny size.
    "model.calibration_samples=4",
]

TUNE_OVERRIDES = [
    "data.phantom={patients: 16, seed: 1, shape: [32, 32, 24], crossover: 0.05, mutant_fraction: 0.4}",
    "data.min_patients=4",
    "preprocess={size: 32, shard_size: 8}",
    "split={folds: 2, test_fraction: 0.2, val_fraction: 0.2}",
    "model={variant: b0, trainable_stages: 1, freeze_batchnorm: true}",
    "train={epochs: 8, micro_batch: 2, accumulate: 1, max_lr: 0.0001, loss: ce, augment: false, num_workers: 0, "
    "patience: 8, amp: 'off', device: cpu}",
    f"tune.space={SPACE}", "tune.epochs=2", "tune.num_samples=4", "tune.max_concurrent=2", "tune.cpus_per_trial=1",
    "tune.max_failures=1",
]


def tiny_overrides(work_dir: Path, cohort_root: Path, *extra: str) -> list[str]:
    return [f"work_dir={work_dir}", f"data.root={cohort_root}", "name=tiny", *TINY_OVERRIDES, *extra]


def tiny_config(work_dir: Path, cohort_root: Path, *extra: str) -> JobConfig:
    assert default_job_dict()["data"]["layout"] == "ucsf_pdgm"
    return load_job(None, tiny_overrides(work_dir, cohort_root, *extra))


def tiny_job(root: Path, *overrides: str) -> JobConfig:
    """The tuning tests' job in ``root/work`` on the cohort ``root/cohort``."""
    return tiny_config(root / "work", root / "cohort", *TUNE_OVERRIDES, *overrides)
