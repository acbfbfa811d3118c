"""Patient-level, IDH-stratified partitions: the held-out test set, k folds and the fit split.

The test set is held out first; the rest is divided into k folds for cross-validation and
tuning, and into one fixed train/validation split for the final fit. ``splits.json`` is the
only record of who is where; tuning and cross-validation may touch :func:`non_test_patients` only.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from sklearn.model_selection import StratifiedKFold, train_test_split

from idhhpc.config import JobConfig, fingerprint
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


def load_splits(config: JobConfig) -> dict[str, Any]:
    return json.loads(WorkDir(config.work_dir).splits.read_text())


def non_test_patients(splits: dict[str, Any]) -> list[str]:
    """Everything tuning and cross-validation may touch."""
    return sorted(set(splits["labels"]) - set(splits["test"]))


def splits_fingerprint(splits: dict[str, Any]) -> str:
    """What a tuned configuration or an out-of-fold figure is tied to: who is in which part."""
    return fingerprint({"test": splits["test"], "folds": splits["folds"], "fit": splits["fit"]})
