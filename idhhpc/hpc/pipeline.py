"""The launch plan: the chosen stages' steps in pipeline order, and which of them may be skipped.

The registry is the stage modules themselves (``idhhpc.stages.<name>.STEPS``), imported only
for the stages a launch asks for, as submitit finds its executors by name.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import replace

import yaml

from idhhpc.config import JobConfig
from idhhpc.constants import STAGES
from idhhpc.stages.step import Step
from idhhpc.workdir import WorkDir

log = logging.getLogger(__name__)


def stage_steps(stage: str) -> tuple[Step, ...]:
    """The steps the stage module ``idhhpc.stages.<stage>`` declares."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; choose from {', '.join(STAGES)}")
    return importlib.import_module(f"idhhpc.stages.{stage}").STEPS


def build_steps(stages: list[str]) -> list[Step]:
    """Steps for the chosen stages, in pipeline order, each depending on the step before it."""
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        raise ValueError(f"unknown stage(s) {', '.join(unknown)}; choose from {', '.join(STAGES)}")
    steps: list[Step] = []
    for stage in (s for s in STAGES if s in stages):
        for step in stage_steps(stage):
            steps.append(replace(step, after=(steps[-1].name,) if steps else ()))
    return steps


def previous_config(config: JobConfig) -> JobConfig | None:
    """The resolved config of the last launch in this work dir, or None if absent or unreadable."""
    path = WorkDir(config.work_dir).resolved_config
    try:
        return JobConfig(**yaml.safe_load(path.read_text()))
    except Exception:  # a missing, old-format or hand-edited file: nothing is known to match
        return None


def find_step(name: str) -> Step:
    """A step by its name (``cv``, ``preprocess-merge``); its stage is the part before the first '-'."""
    for step in stage_steps(name.split("-")[0]):
        if step.name == name:
            return step
    raise ValueError(f"no step named {name!r}")


def outputs_verify(step: Step | str, config: JobConfig, previous: JobConfig | None = None) -> bool:
    """True when the outputs of ``step`` (a Step or a step name) are complete and valid for
    ``config``; ``previous`` is the config they were made with. An output that cannot even be read
    is an output to rebuild."""
    step = find_step(step) if isinstance(step, str) else step
    if step.outputs_verify is None:
        return False
    try:
        return step.outputs_verify(config, previous)
    except Exception as err:
        log.info("outputs of %s do not verify: %s: %s", step.name, type(err).__name__, err)
        return False


def plan_skips(steps: list[Step], config: JobConfig, previous: JobConfig | None = None) -> set[str]:
    """Names of the leading steps whose outputs verify; stops at the first that must rerun, because
    once one step reruns every later step's inputs are about to change."""
    skipped: set[str] = set()
    for step in steps:
        if not outputs_verify(step, config, previous):
            break
        skipped.add(step.name)
    return skipped
