"""Stage ``fit``: the final model on the fixed train/validation split, exported as ``model.pt``.

Run with several tasks (``hpc.stages.fit.tasks_per_node`` = GPUs per node, ``nodes``) it trains
data-parallel. Like ``cv`` it is a submitit ``Checkpointable`` job that resumes after preemption.
``fit`` follows ``cv`` in the chain only so that the fold jobs do not compete with it for GPUs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from idhhpc.config import JobConfig
from idhhpc.data.splits import load_splits
from idhhpc.stages.checks import TRAINING_CONSUMES, TRAINING_NEEDS, training_finished, training_reads
from idhhpc.stages.step import Step
from idhhpc.train.fitting import train_run
from idhhpc.train.preemption import TrainingJob
from idhhpc.train.stopping import StopRequest
from idhhpc.workdir import FIT_RUN as RUN_NAME
from idhhpc.workdir import WorkDir


def _fit(config: JobConfig, stop: StopRequest | None = None) -> dict[str, Any]:
    split = load_splits(config)["fit"]
    return train_run(config, RUN_NAME, split["train"], split["val"], stop)


run_fit = TrainingJob(_fit)


def outputs_verify(config: JobConfig) -> bool:
    if not WorkDir(config.work_dir).splits.is_file():
        return False
    return training_finished(config, RUN_NAME, load_splits(config)["fit"])


def fit_outputs(config: JobConfig) -> list[Path]:
    """The served model and its selection (evaluate and explain read them)."""
    work = WorkDir(config.work_dir)
    return [work.selection(RUN_NAME), work.exported_model(RUN_NAME)]


STEPS = (Step("fit", "fit", run_fit, outputs_verify=outputs_verify, outputs=fit_outputs, reads=training_reads,
              needs=TRAINING_NEEDS, consumes=TRAINING_CONSUMES),)
