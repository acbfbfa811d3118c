"""Stage ``tune``: a Ray Tune sweep over ``tune.space`` whose best configuration feeds ``cv`` and ``fit``."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import ray

from idhhpc.config import JobConfig
from idhhpc.tune.sweep import run_sweep

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
