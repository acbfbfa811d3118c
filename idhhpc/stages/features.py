"""Stage ``features``: every patient's frozen-prefix output, computed once → ``features/<key>/``.

With pretrained weights and a frozen prefix, ``cv``, ``fit`` and ``tune`` then train only the
tail from these shards (see :mod:`idhhpc.train.prefix_cache`). A job whose prefix is not frozen
(no pretrained weights, every stage trained, or ``cache.enabled: false``) has no task here and
nothing to verify, so the stage costs it nothing.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from idhhpc.config import JobConfig
from idhhpc.constants import SHARD_INDEX_FILE
from idhhpc.data.feature_cache import cache_is_complete
from idhhpc.stages.checks import newer
from idhhpc.stages.step import Step
from idhhpc.train.prefix_cache import (
    build_cache,
    cache_applies,
    cache_folder,
    cached_views,
)
from idhhpc.workdir import WorkDir

log = logging.getLogger(__name__)


def feature_tasks(config: JobConfig) -> list[tuple]:
    """One task when the cache applies, none otherwise."""
    return [()] if cache_applies(config) else []


def run_features(config: JobConfig) -> dict[str, Any]:
    if not cache_applies(config):
        log.info("features: the prefix is not frozen pretrained weights (or cache.enabled is false): nothing to cache")
        return {"cache": None}
    folder = build_cache(config)
    return {"cache": str(folder), "views": cached_views(config)}


def outputs_verify(config: JobConfig) -> bool:
    """Nothing to do, or the cache for the current key is newer than the shard index, holds every
    preprocessed patient with the configured views, and every shard's checksum matches."""
    if not cache_applies(config):
        return True
    work = WorkDir(config.work_dir)
    if not work.index.is_file():
        return False
    folder = cache_folder(config)
    patients = list(json.loads(work.index.read_text())["patients"])
    return newer(folder / SHARD_INDEX_FILE, work.index) and cache_is_complete(folder, folder.name,
                                                                               cached_views(config), patients)


def feature_reads(config: JobConfig) -> tuple[str, ...]:
    """The frozen prefix, the augmentation and ``cache`` (the cache key); nothing in a job whose
    training uses no cache, where the step has no task and writes nothing."""
    return ("model", "cache", "train.augment") if cache_applies(config) else ()


STEPS = (Step("features", "features", run_features, tasks=feature_tasks, outputs_verify=outputs_verify,
              reads=feature_reads, needs=("preprocess-merge",)),)
