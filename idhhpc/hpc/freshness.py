"""The freshness rule: which of a launch's steps may be skipped.

A step is skipped when its outputs are intact (its own integrity check), its last successful
jobs recorded the stamp the config gives it now (:mod:`idhhpc.hpc.stamps`), and no step it needs
or consumes reruns in this launch. Unlike the rule it replaces ("once one step reruns, every
later one does"), a step after a rerun one is skipped when nothing it declares changed.
"""

from __future__ import annotations

import logging

from idhhpc.config import JobConfig
from idhhpc.hpc.pipeline import find_step, outputs_verify
from idhhpc.hpc.stamps import recorded
from idhhpc.stages.step import Step

log = logging.getLogger(__name__)


def fresh(step: Step, config: JobConfig) -> bool:
    """The step's outputs are intact and its last successful jobs recorded the stamp of ``config``."""
    if not outputs_verify(step, config):
        return False
    try:
        return recorded(step, config)
    except Exception as err:  # an input of its tasks is missing or unreadable: rebuild
        log.info("stamp of %s cannot be checked: %s: %s", step.name, type(err).__name__, err)
        return False


def upstream(step: Step) -> set[str]:
    """Every step whose outputs ``step`` reads, directly or through others (needed or consumed)."""
    found: set[str] = set()
    for name in (*step.needs, *step.consumes):
        found |= {name} | upstream(find_step(name))
    return found


def plan_skips(steps: list[Step], config: JobConfig) -> set[str]:
    """Names of the steps that may be skipped: fresh, and nothing upstream of them reruns in this
    launch (its outputs are about to change; upstream through steps the launch leaves out too).
    A step whose declared inputs did not change is skipped even after one that reruns:
    ``evaluate.bootstrap`` rewrites the report and leaves shards, checkpoints and explanations alone."""
    reruns: set[str] = set()
    for step in steps:
        if reruns & upstream(step) or not fresh(step, config):
            reruns.add(step.name)
    return {step.name for step in steps} - reruns
