"""Stage ``tune``: a Ray Tune sweep over ``tune.space`` whose best configuration feeds ``cv`` and ``fit``."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import ray

from idhhpc.config import JobConfig
from idhhpc.stages.checks import TRAINING_NEEDS, newer, trained_sections
from idhhpc.stages.step import Step
from idhhpc.tune.sweep import run_sweep
from idhhpc.workdir import WorkDir

log = logging.getLogger(__name__)


def run_tune(config: JobConfig) -> dict[str, Any]:
    """Run or resume the sweep; shut down the Ray it started, keep one it was given."""
    owns_ray = not ray.is_initialized()
    try:
        summary = run_sweep(config)
    finally:
        if owns_ray and ray.is_initialized():
            ray.shutdown()
    log.info("sweep: best mean CV AUC %.3f over %d trials (%d epochs): %s", summary.best_val_auc, summary.trials,
             summary.epochs_spent, summary.best_config)
    return {k: str(v) if k == "experiment" else v for k, v in dataclasses.asdict(summary).items()}


def outputs_verify(config: JobConfig) -> bool:
    """``best_config.yaml`` is newer than the split."""
    work = WorkDir(config.work_dir)
    return newer(work.best_config, work.splits)


def tune_reads(config: JobConfig) -> tuple[str, ...]:
    """The sweep trains as cv does, under its own ``tune`` settings; it ranks trials by AUC, so
    the calibration and threshold keys that cv reads are not its inputs."""
    return (*trained_sections(config), "tune")


def tuned_outputs(config: JobConfig) -> list[Path]:
    return [WorkDir(config.work_dir).best_config]


STEPS = (Step("tune", "tune", run_tune, outputs_verify=outputs_verify, outputs=tuned_outputs, reads=tune_reads,
              needs=TRAINING_NEEDS),)
