"""``best_config.yaml``: the training values a sweep chose, and the one place they are applied.

The tune stage writes the file with the fingerprint of the splits it tuned on; ``cv`` and
``fit`` train with :func:`apply_tuned`, which refuses values tuned on other splits (their test
patients may have been tuning patients), and the exported model carries the resulting config,
so evaluation, explanation and prediction never read the file again.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import yaml

from idhhpc.atomic import atomic_write_text
from idhhpc.config import JobConfig
from idhhpc.data.splits import load_splits, splits_fingerprint
from idhhpc.workdir import WorkDir

log = logging.getLogger(__name__)


class StaleTunedConfig(ValueError):
    """``best_config.yaml`` was tuned on other splits than the current ``splits.json``."""


def write_best_config(config: JobConfig, tuned: dict[str, Any]) -> Path:
    path = WorkDir(config.work_dir).best_config
    record = {"train": tuned, "splits_fingerprint": splits_fingerprint(load_splits(config))}
    atomic_write_text(path, yaml.safe_dump(record, sort_keys=True))
    return path


def apply_tuned(config: JobConfig) -> JobConfig:
    """``config`` with the tuned ``train`` values of a finished sweep, when there is one."""
    path = WorkDir(config.work_dir).best_config
    if not path.is_file():
        return config
    record = yaml.safe_load(path.read_text()) or {}
    current = splits_fingerprint(load_splits(config))
    if record.get("splits_fingerprint") != current:
        raise StaleTunedConfig(
            f"{path} was tuned on splits {record.get('splits_fingerprint') or '(not recorded)'}, but "
            f"{WorkDir(config.work_dir).splits} is now {current}: its values may have been chosen on today's "
            "test patients. Rerun the tune stage (--stages tune,cv,fit,evaluate,explain) or delete the file.")
    tuned = record.get("train", {})
    log.info("using tuned hyperparameters from %s: %s", path, tuned)
    return config.model_copy(update={"train": config.train.model_copy(update=tuned)})
