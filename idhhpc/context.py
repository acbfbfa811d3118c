"""The launch context: what one launch adds to the job (its MLflow run, where it tracks, who holds
the work dir), kept apart from the frozen job config.

The job config says what to compute; two launches of one job compute the same thing, so their
``config.yaml`` and every fingerprint of it must agree. What differs per launch lives here: the
launcher opens the MLflow parent run and makes a :class:`LaunchContext`; every job it submits
carries it (:class:`idhhpc.hpc.jobcall.StageCall` installs it for the job's process), and the
tracking code reads the parent run from :func:`current`. It is process-wide rather than a
context variable because training runs in a worker thread (:mod:`idhhpc.train.preemption`).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator


@dataclass(frozen=True)
class LaunchContext:
    """``tracking_uri``: where the launch's runs go (the job's ``tracking.uri`` or the work dir's
    embedded store); ``parent_run_id``: the launch run every stage run is a child of (None when
    MLflow was unreachable or outside a launch); ``lock_token``: the work-dir lock's holder."""

    tracking_uri: str | None = None
    parent_run_id: str | None = None
    lock_token: str | None = None


_current = LaunchContext()


def current() -> LaunchContext:
    """The context of the launch this process works for (an empty one outside any launch)."""
    return _current


@contextlib.contextmanager
def using(context: LaunchContext | None) -> Iterator[LaunchContext]:
    """Make ``context`` current for the block (a job's whole run); None keeps the current one."""
    global _current
    before = _current
    _current = context if context is not None else before
    try:
        yield _current
    finally:
        _current = before
