"""Stage ``cv``: one training job per fold of ``splits.json`` (a Slurm array on a cluster).

Each fold is a submitit ``Checkpointable`` job: on Slurm's preemption or time-limit signal the
trainer saves ``last.pt`` at the next micro-step and the job is requeued, resuming exactly.
"""

from __future__ import annotations

from typing import Any

from idhhpc.config import JobConfig
from idhhpc.data.splits import load_splits
from idhhpc.stages.checks import training_finished
from idhhpc.stages.step import Step
from idhhpc.train.fitting import train_run
from idhhpc.train.preemption import TrainingJob
from idhhpc.train.stopping import StopRequest


def fold_run_name(fold: int) -> str:
    return f"fold-{fold}"


def fold_tasks(config: JobConfig) -> list[tuple]:
    return [(fold,) for fold in range(config.split.folds)]


def _cv_fold(config: JobConfig, fold: int, stop: StopRequest | None = None) -> dict[str, Any]:
    split = load_splits(config)["folds"][fold]
    return train_run(config, fold_run_name(fold), split["train"], split["val"], stop)


run_cv_fold = TrainingJob(_cv_fold)


def outputs_verify(config: JobConfig, previous: JobConfig | None) -> bool:
    return all(training_finished(config, previous, fold_run_name(f)) for f in range(config.split.folds))


STEPS = (Step("cv", "cv", run_cv_fold, tasks=fold_tasks, outputs_verify=outputs_verify),)
