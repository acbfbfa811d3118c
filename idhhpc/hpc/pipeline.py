"""The pipeline as a list of steps: which stage function, how many array tasks, after what.

Functions are named by import path and resolved only when a step runs, so planning a launch
(or a ``--dry-run``) imports no training code and a stage can change without touching this file.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable

from idhhpc.config import JobConfig


@dataclass(frozen=True)
class Step:
    name: str
    stage: str
    target: str
    tasks: Callable[[JobConfig], list[tuple]]
    after: tuple[str, ...] = ()

    def function(self) -> Callable[..., Any]:
        module, _, attribute = self.target.partition(":")
        return getattr(importlib.import_module(module), attribute)


def _single(config: JobConfig) -> list[tuple]:
    return [()]


def _shards(config: JobConfig) -> list[tuple]:
    from idhhpc.stages.preprocess import count_shards

    return [(i,) for i in range(count_shards(config))]


def _folds(config: JobConfig) -> list[tuple]:
    return [(fold,) for fold in range(config.split.folds)]


_CATALOGUE: dict[str, list[tuple[str, str, Callable[[JobConfig], list[tuple]]]]] = {
    "cohort": [("cohort", "idhhpc.stages.cohort:run_cohort", _single)],
    "preprocess": [
        ("preprocess", "idhhpc.hpc.guards:preprocess_shard", _shards),
        ("preprocess-merge", "idhhpc.stages.preprocess:run_merge_index", _single),
    ],
    "split": [("split", "idhhpc.stages.split:run_split", _single)],
    "tune": [("tune", "idhhpc.stages.tune:run_tune", _single)],
    "cv": [("cv", "idhhpc.stages.train:run_cv_fold", _folds)],
    "fit": [("fit", "idhhpc.stages.train:run_fit", _single)],
    "evaluate": [("evaluate", "idhhpc.stages.evaluate:run_evaluate", _single)],
    "explain": [("explain", "idhhpc.stages.explain:run_explain", _single)],
}

# ``fit`` follows ``cv`` only so that the fold jobs do not compete with it for the same GPUs.
_ORDER = ("cohort", "preprocess", "split", "tune", "cv", "fit", "evaluate", "explain")


def build_steps(stages: list[str]) -> list[Step]:
    """Steps for the chosen stages, in pipeline order, each depending on the step before it."""
    unknown = sorted(set(stages) - set(_CATALOGUE))
    if unknown:
        raise ValueError(f"unknown stage(s) {', '.join(unknown)}; choose from {', '.join(_ORDER)}")
    steps: list[Step] = []
    for stage in (s for s in _ORDER if s in stages):
        for name, target, tasks in _CATALOGUE[stage]:
            after = (steps[-1].name,) if steps else ()
            steps.append(Step(name, stage, target, tasks, after))
    return steps
