"""The folds a sweep trains on, and the guard that keeps the test split out of tuning.

Choosing hyperparameters on test patients would make the reported test metrics optimistic,
so the trainable re-reads ``splits.json`` itself and refuses any test patient it is handed,
whoever computed the folds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class TestSplitLeak(RuntimeError):
    """A tuning trial was handed a patient of the held-out test split."""

    __test__ = False


def tuning_folds(splits: dict[str, Any], k: int | None) -> list[dict[str, list[str]]]:
    """The first ``k`` cross-validation folds of ``splits`` (all of them when ``k`` is None)."""
    folds = splits["folds"]
    k = len(folds) if k is None else k
    if not 2 <= k <= len(folds):
        raise ValueError(f"tune.folds={k} but splits.json has {len(folds)} folds (need 2..{len(folds)})")
    chosen = [{"train": list(f["train"]), "val": list(f["val"])} for f in folds[:k]]
    assert_no_test_patients(chosen, splits)
    return chosen


def assert_no_test_patients(folds: list[dict[str, list[str]]], splits: dict[str, Any]) -> None:
    test = set(splits["test"])
    for index, fold in enumerate(folds):
        for part in ("train", "val"):
            leaked = sorted(test.intersection(fold[part]))
            if leaked:
                raise TestSplitLeak(f"fold {index} {part} holds {len(leaked)} test patients "
                                    f"(e.g. {leaked[:3]}): tuning must never see the test split")


def checked_folds(folds: list[dict[str, list[str]]], splits_path: Path) -> list[dict[str, list[str]]]:
    """Check folds handed to a trial against the ``splits.json`` on disk."""
    assert_no_test_patients(folds, json.loads(Path(splits_path).read_text()))
    return folds
