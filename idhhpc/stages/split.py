"""Stage ``split``: ``splits.json`` from the preprocessed patients (see :mod:`idhhpc.data.splits`).

Only preprocessed patients take part, and each appears once (follow-up duplicates were dropped
at ingestion).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from idhhpc.atomic import atomic_write_json
from idhhpc.config import JobConfig
from idhhpc.data.splits import make_splits
from idhhpc.stages.checks import newer
from idhhpc.stages.step import Step
from idhhpc.workdir import WorkDir


def splits_for(config: JobConfig) -> dict[str, Any]:
    """The splits the current index and ``config.split`` call for (a pure function of both)."""
    patients = json.loads(WorkDir(config.work_dir).index.read_text())["patients"]
    ids = sorted(patients)
    s = config.split
    return make_splits(ids, [int(patients[p]["label"]) for p in ids], s.test_fraction, s.val_fraction, s.folds,
                       config.seed)


def run_split(config: JobConfig) -> dict[str, Any]:
    splits = splits_for(config)
    atomic_write_json(WorkDir(config.work_dir).splits, splits)
    return splits


def outputs_verify(config: JobConfig) -> bool:
    """``splits.json`` is newer than the index and equals the splits recomputed now."""
    work = WorkDir(config.work_dir)
    if not newer(work.splits, work.index):
        return False
    return json.loads(work.splits.read_text()) == json.loads(json.dumps(splits_for(config)))


def split_outputs(config: JobConfig) -> list[Path]:
    return [WorkDir(config.work_dir).splits]


STEPS = (Step("split", "split", run_split, outputs_verify=outputs_verify, outputs=split_outputs, reads=("split",),
              needs=("preprocess-merge",)),)
