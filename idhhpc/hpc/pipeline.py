"""The step registry: the chosen stages' steps in pipeline order and their integrity checks
(the step graph their declarations make: :mod:`idhhpc.stages.step`).

The registry is the stage modules themselves (``idhhpc.stages.<name>.STEPS``), imported only
for the stages a launch asks for, as submitit finds its executors by name.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import replace

from idhhpc.config import JobConfig
from idhhpc.constants import STAGES
from idhhpc.stages.step import Step

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


def find_step(name: str) -> Step:
    """A step by its name (``cv``, ``preprocess-merge``); its stage is the part before the first '-'."""
    for step in stage_steps(name.split("-")[0]):
        if step.name == name:
            return step
    raise ValueError(f"no step named {name!r}")


def declared(step: Step) -> bool:
    """Whether ``step`` is one of the pipeline's declared steps, whose jobs record stamps (an ad-hoc
    step run through the runner, a probe or a benchmark's, has no declaration to stamp)."""
    return step.stage in STAGES and any(s.name == step.name for s in stage_steps(step.stage))


def outputs_verify(step: Step | str, config: JobConfig) -> bool:
    """True when the outputs of ``step`` (a Step or a step name) are complete and intact for
    ``config`` (its integrity check). An output that cannot even be read is an output to rebuild."""
    step = find_step(step) if isinstance(step, str) else step
    if step.outputs_verify is None:
        return False
    try:
        return step.outputs_verify(config)
    except Exception as err:
        log.info("outputs of %s do not verify: %s: %s", step.name, type(err).__name__, err)
        return False

