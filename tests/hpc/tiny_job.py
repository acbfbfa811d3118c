"""The tiny phantom job the pipeline tests run: 16 patients at 48x48x32, size 32, B0, 1 epoch, 2 folds."""

from __future__ import annotations

from pathlib import Path

from idhhpc.config import JobConfig, ModelConfig, default_job_dict, load_job

TINY_OVERRIDES = [
    "data.min_patients=8",
    "data.phantom={patients: 16, seed: 0, shape: [48, 48, 32], crossover: 0.1}",
    "preprocess={size: 32, shard_size: 6}",
    "split.folds=2",
    "model={variant: b0, trainable_stages: 2}",
    "train={epochs: 1, micro_batch: 2, accumulate: 1, num_workers: 0, patience: 2}",
    "evaluate.bootstrap=100",
    "explain.max_cases=2",
    "hpc.resources={cpus_per_task: 1, mem_gb: 2, time_min: 10}",
]
if "calibration_samples" in ModelConfig.model_fields:
    # An even count: with micro_batch 2 an odd one leaves a BatchNorm batch of one at this tiny size.
    TINY_OVERRIDES.append("model.calibration_samples=4")


def tiny_overrides(work_dir: Path, cohort_root: Path, *extra: str) -> list[str]:
    return [f"work_dir={work_dir}", f"data.root={cohort_root}", "name=tiny", *TINY_OVERRIDES, *extra]


def tiny_config(work_dir: Path, cohort_root: Path, *extra: str) -> JobConfig:
    assert default_job_dict()["data"]["layout"] == "ucsf_pdgm"
    return load_job(None, tiny_overrides(work_dir, cohort_root, *extra))
