"""A pipeline step: the function a job runs, the array tasks it is run for, and its output check.

Every stage module declares its steps in a module-level ``STEPS`` tuple; the launcher's registry
(:mod:`idhhpc.hpc.pipeline`) reads them from there, so a stage is added or changed in its own
module alone. ``function`` must be picklable by reference (a module-level function, or a
``TrainingJob`` wrapping one) because submitit sends it to another process.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from idhhpc.config import JobConfig

Tasks = Callable[[JobConfig], list[tuple]]
OutputCheck = Callable[[JobConfig, "JobConfig | None"], bool]


def single_task(config: JobConfig) -> list[tuple]:
    """Most steps are one job with no arguments besides the config."""
    return [()]


@dataclass(frozen=True)
class Step:
    """``function(config, *task)`` for every ``task`` in ``tasks(config)``; ``outputs_verify(config,
    previous)`` is True when the step's outputs already belong to ``config`` (``previous`` is the
    configuration of the launch that wrote them), so a relaunch may skip it. ``after`` names the
    steps it waits for; the launch plan fills it in."""

    name: str
    stage: str
    function: Callable[..., Any]
    tasks: Tasks = single_task
    outputs_verify: OutputCheck | None = None
    after: tuple[str, ...] = ()

    @property
    def target(self) -> str:
        """``module:function`` of what the job runs, for plans and logs."""
        inner = getattr(self.function, "train_fn", self.function)
        return f"{inner.__module__}:{getattr(inner, '__qualname__', type(inner).__name__)}"
