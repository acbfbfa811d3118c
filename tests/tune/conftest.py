"""A tiny preprocessed phantom work dir (cohort, shards, splits), built once per session and copied per test."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from idhhpc.stages.cohort import run_cohort
from idhhpc.stages.preprocess import count_shards, run_merge_index, run_preprocess_shard
from idhhpc.stages.split import run_split
from tests.support.jobs import tiny_job


@pytest.fixture(scope="session")
def prepared(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tune-base")
    config = tiny_job(root)
    run_cohort(config)
    for shard in range(count_shards(config)):
        run_preprocess_shard(config, shard)
    run_merge_index(config)
    run_split(config)
    return root


@pytest.fixture
def workspace(prepared, tmp_path) -> Path:
    """A private copy, so tests that write sweeps and best configs do not see each other."""
    shutil.copytree(prepared / "work", tmp_path / "work", ignore=shutil.ignore_patterns("mlflow.db", "tune"))
    (tmp_path / "cohort").symlink_to(prepared / "cohort")
    return tmp_path
