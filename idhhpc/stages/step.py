"""A pipeline step: the function a job runs, the array tasks it is run for, what it reads and
writes, and its integrity check.

Every stage module declares its steps in a module-level ``STEPS`` tuple; the launcher's registry
(:mod:`idhhpc.hpc.pipeline`) reads them from there, so a stage is added or changed in its own
module alone. ``function`` must be picklable by reference (a module-level function, or a
``TrainingJob`` wrapping one) because submitit sends it to another process.

Freshness is the runner's, not the step's: from ``reads``, ``needs`` and ``consumes`` the runner
computes the step's content stamp (:mod:`idhhpc.hpc.stamps`), and a step reruns when its stamp or
its outputs' checksums differ from those its last successful job recorded. A config key that no
step declares reruns nothing; one that a step forgets to declare is caught by the table test
over every section (tests/hpc/test_launcher_local.py), not by a reader of each check.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from idhhpc.config import JobConfig

Tasks = Callable[[JobConfig], list[tuple]]
OutputCheck = Callable[[JobConfig], bool]
Reads = tuple[str, ...] | Callable[[JobConfig], tuple[str, ...]]
Outputs = Callable[[JobConfig], list[Path]]


def single_task(config: JobConfig) -> list[tuple]:
    """Most steps are one job with no arguments besides the config."""
    return [()]


def no_outputs(config: JobConfig) -> list[Path]:
    """Array steps record no output checksums: their tasks finish one by one, so no task sees the
    step's final outputs; their integrity checks (shard checksums, finished runs) stand for them."""
    return []


@dataclass(frozen=True)
class Step:
    """``function(config, *task)`` for every ``task`` in ``tasks(config)``.

    - ``reads``: the config sections (``"evaluate"``) or single keys (``"evaluate.ensemble"``) the
      step's outputs depend on, or a function of the config returning them (a section that matters
      only in some jobs: the feature cache). The seed is read by every step.
    - ``needs``: upstream steps whose outputs it reads; their stamps enter its own, and it reruns
      whenever one of them reruns.
    - ``consumes``: upstream steps whose outputs it reads by content (the tuned values): their
      outputs' checksums, not their stamps, enter its own, so a step that is not run in this job
      (tune) does not tie its dependents to its config section.
    - ``outputs``: the files whose checksums the job records on success, so a hand-edited or
      replaced output is rebuilt.
    - ``outputs_verify(config)``: integrity only (complete, readable, checksums as recorded inside
      the outputs); True lets the runner skip the step when its stamp matches too.
    - ``after``: the steps its job waits for; the launch plan fills it in (pipeline order)."""

    name: str
    stage: str
    function: Callable[..., Any]
    tasks: Tasks = single_task
    outputs_verify: OutputCheck | None = None
    reads: Reads = ()
    needs: tuple[str, ...] = ()
    consumes: tuple[str, ...] = ()
    outputs: Outputs = no_outputs
    after: tuple[str, ...] = ()

    @property
    def array(self) -> bool:
        """Run as one job per task (shards, folds) rather than one job."""
        return self.tasks is not single_task

    def read_keys(self, config: JobConfig) -> tuple[str, ...]:
        """The declared config keys for ``config``."""
        return self.reads(config) if callable(self.reads) else self.reads

    @property
    def target(self) -> str:
        """``module:function`` of what the job runs, for plans and logs."""
        inner = getattr(self.function, "train_fn", self.function)
        return f"{inner.__module__}:{getattr(inner, '__qualname__', type(inner).__name__)}"
