"""Run pipeline stages in this process, in pipeline order, for tests that need their outputs.

Each task runs through the job wrapper the runner submits (:func:`~idhhpc.hpc.jobcall.stage_call`),
so it records its stamp as a launched job does and a later plan sees what a relaunch would."""

from __future__ import annotations

from idhhpc.config import JobConfig
from idhhpc.hpc.jobcall import stage_call
from idhhpc.hpc.pipeline import build_steps


def run_in_process(config: JobConfig, stages: list[str]) -> None:
    for step in build_steps(stages):
        job = stage_call(step.function, step.name, 1, stamped=True)
        for args in step.tasks(config):
            job(config, *args)
