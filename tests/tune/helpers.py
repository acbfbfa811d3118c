"""Job settings for the tune tests: a tiny phantom cohort, b0 at 32³, two folds, two epochs."""

from __future__ import annotations

from pathlib import Path

from idhhpc.config import JobConfig, load_job

SPACE = Path(__file__).resolve().parents[2] / "tune_spaces" / "focal_onecycle.yaml"


def tiny_job(root: Path, *overrides: str) -> JobConfig:
    return load_job(None, [
        f"work_dir={root / 'work'}", f"data.root={root / 'cohort'}", "data.phantom.patients=16",
        "data.phantom.shape=[32,32,24]", "data.min_patients=4", "preprocess.size=32", "preprocess.shard_size=8",
        "split.folds=2", "split.test_fraction=0.2", "split.val_fraction=0.2", "model.variant=b0",
        "model.trainable_stages=1", "train.micro_batch=2", "train.accumulate=1", "train.augment=false",
        "train.amp='off'", "train.device=cpu", f"tune.space={SPACE}", "tune.epochs=2", "tune.num_samples=4",
        "tune.max_concurrent=2", "tune.cpus_per_trial=1", "tune.max_failures=1", *overrides])
