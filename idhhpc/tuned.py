"""``best_config.yaml``: the training values a sweep chose, and the one place they are applied.

The tune stage writes the file; ``cv`` and ``fit`` train with :func:`apply_tuned`, and the
exported model carries the resulting config, so evaluation, explanation and prediction never
read the file again.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import yaml

from idhhpc.atomic import atomic_write_text
from idhhpc.config import JobConfig
from idhhpc.workdir import WorkDir

log = logging.getLogger(__name__)


def write_best_config(config: JobConfig, tuned: dict[str, Any]) -> Path:
    path = WorkDir(config.work_dir).best_config
    atomic_write_text(path, yaml.safe_dump({"train": tuned}, sort_keys=True))
    return path


def apply_tuned(config: JobConfig) -> JobConfig:
    """``config`` with the tuned ``train`` values of a finished sweep, when there is one."""
    path = WorkDir(config.work_dir).best_config
    if not path.is_file():
        return config
    tuned = yaml.safe_load(path.read_text()).get("train", {})
    log.info("using tuned hyperparameters from %s: %s", path, tuned)
    return config.model_copy(update={"train": config.train.model_copy(update=tuned)})
