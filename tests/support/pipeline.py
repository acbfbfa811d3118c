"""Run pipeline stages in this process, in pipeline order, for tests that need their outputs."""

from __future__ import annotations

from idhhpc.config import JobConfig
from idhhpc.hpc.pipeline import build_steps


def run_in_process(config: JobConfig, stages: list[str]) -> None:
    for step in build_steps(stages):
        for args in step.tasks(config):
            step.function(config, *args)
