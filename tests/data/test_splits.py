"""Patient-level stratified splits: disjoint, complete, stratified, reproducible."""

from __future__ import annotations

import numpy as np
import pytest

from idhhpc.data.splits import make_splits, non_test_patients


@pytest.fixture
def cohort():
    ids = [f"UCSF-PDGM-{i:04d}" for i in range(200)]
    labels = [1 if i % 5 == 0 else 0 for i in range(200)]
    return ids, labels


def test_partitions_are_disjoint_and_complete(cohort):
    ids, labels = cohort
    splits = make_splits(ids, labels, 0.15, 0.15, 5, seed=3)
    test, train, val = set(splits["test"]), set(splits["fit"]["train"]), set(splits["fit"]["val"])
    assert not (test & train or test & val or train & val)
    assert test | train | val == set(ids)
    fold_vals = [set(f["val"]) for f in splits["folds"]]
    assert set().union(*fold_vals) == set(ids) - test
    assert sum(len(v) for v in fold_vals) == len(set(ids) - test)
    for fold in splits["folds"]:
        assert not set(fold["train"]) & set(fold["val"]) and not set(fold["train"]) & test
    assert set(non_test_patients(splits)) == set(ids) - test


def test_sizes_and_stratification(cohort):
    ids, labels = cohort
    splits = make_splits(ids, labels, 0.15, 0.15, 5, seed=0)
    assert len(splits["test"]) == 30 and abs(len(splits["fit"]["val"]) - 30) <= 1
    mutant_share = np.mean([splits["labels"][p] for p in splits["test"]])
    assert mutant_share == pytest.approx(0.2, abs=0.04)


def test_seeded(cohort):
    ids, labels = cohort
    assert make_splits(ids, labels, 0.15, 0.15, 5, 1) == make_splits(ids, labels, 0.15, 0.15, 5, 1)
    assert make_splits(ids, labels, 0.15, 0.15, 5, 1)["test"] != make_splits(ids, labels, 0.15, 0.15, 5, 2)["test"]


def test_duplicates_refused(cohort):
    ids, labels = cohort
    with pytest.raises(ValueError, match="unique"):
        make_splits(ids + ids[:1], labels + labels[:1], 0.15, 0.15, 5, 0)
