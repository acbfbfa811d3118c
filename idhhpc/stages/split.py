"""Stage ``split``: patient-level, IDH-stratified partitions written to ``splits.json``.

The test set is held out first; the rest is divided into k folds for cross-validation and
tuning, and into one fixed train/validation split for the final fit. Only preprocessed
patients take part, and each appears once (follow-up duplicates were dropped at ingestion).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from sklearn.model_selection import StratifiedKFold, train_test_split

from idhhpc.config import JobConfig
from idhhpc.io import atomic_write_json
from idhhpc.workdir import WorkDir


def make_splits(patient_ids: list[str], labels: list[int], test_fraction: float, val_fraction: float,
                folds: int, seed: int) -> dict[str, Any]:
    """``val_fraction`` and ``test_fraction`` are shares of the whole cohort (70/15/15 by default)."""
    if len(set(patient_ids)) != len(patient_ids):
        raise ValueError("patient ids must be unique before splitting")
    ids, y = np.asarray(patient_ids), np.asarray(labels)
    rest, test = train_test_split(ids, test_size=test_fraction, stratify=y, random_state=seed)
    rest_y = y[np.isin(ids, rest)]
    rest = ids[np.isin(ids, rest)]
    fit_train, fit_val = train_test_split(rest, test_size=val_fraction / (1 - test_fraction), stratify=rest_y,
                                          random_state=seed)
    kfold = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    fold_list = [{"train": sorted(rest[tr].tolist()), "val": sorted(rest[va].tolist())} for tr, va in kfold.split(rest, rest_y)]
    return {
        "seed": seed,
        "test": sorted(test.tolist()),
        "fit": {"train": sorted(fit_train.tolist()), "val": sorted(fit_val.tolist())},
        "folds": fold_list,
        "labels": {pid: int(label) for pid, label in zip(patient_ids, labels)},
    }


def run_split(config: JobConfig) -> dict[str, Any]:
    work = WorkDir(config.work_dir)
    index = json.loads(work.index.read_text())
    patients = sorted(index["patients"])
    labels = [int(index["patients"][pid]["label"]) for pid in patients]
    s = config.split
    splits = make_splits(patients, labels, s.test_fraction, s.val_fraction, s.folds, config.seed)
    atomic_write_json(work.splits, splits)
    return splits


def load_splits(config: JobConfig) -> dict[str, Any]:
    return json.loads(WorkDir(config.work_dir).splits.read_text())


def non_test_patients(splits: dict[str, Any]) -> list[str]:
    """Everything tuning and cross-validation may touch."""
    return sorted(set(splits["labels"]) - set(splits["test"]))
