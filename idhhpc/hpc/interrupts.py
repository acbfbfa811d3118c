"""Stopping a local launch cleanly on Ctrl-C, SIGTERM or SIGHUP.

The launcher's handlers only record the signal: raising inside one could land in the middle of
``executor.submit`` and lose a controller that was just started. The runner's poll loop then
raises :class:`LaunchInterrupted` and stops the running jobs:

- a local job (own session, see ``localjobs``) gets SIGTERM at its controller, which forwards it
  to its tasks only, not to their DataLoader workers (which would die at once and break the
  trainer's loader before it saved); a training task saves ``last.pt`` at the next micro-step
  and ends, any other task ends at once; after ``GRACE_S`` whatever is left of the job's
  process group is killed. A second signal kills every job at once.
- an in-process (debug) job: the handler asks the trainer to save and stop; with no trainer
  running it raises at once.

The launcher then marks its MLflow runs KILLED, releases the work-dir lock and exits like the
signal (status 130 for SIGINT, 143 for SIGTERM), so a calling script stops too.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any, Iterable, Iterator, NoReturn

from idhhpc.hpc.localjobs import group_alive

log = logging.getLogger(__name__)

GRACE_S = 8.0
"""How long jobs get to save and end before SIGKILL; with reaping, every process is gone well
within 10 s of the signal."""
SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class LaunchInterrupted(BaseException):
    """The launch was stopped by a signal; raised in the launcher's main thread once it is safe."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum
        self.exit_code = 128 + signum


class _Guard:
    def __init__(self, in_process: bool) -> None:
        self.in_process = in_process
        self.signum: int | None = None
        self.jobs: list[Any] = []

    def on_signal(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if self.signum is not None:
            log.warning("second %s: killing every job now", name)
            kill_groups(self.jobs)
            if self.in_process:
                raise KeyboardInterrupt
            return
        self.signum = signum
        log.warning("%s: stopping the launch (training saves last.pt first; a second signal kills at once)", name)
        if self.in_process and _request_training_stop() == 0:
            raise LaunchInterrupted(signum)


def _request_training_stop() -> int:
    """Ask in-process trainers to save and stop; imported here, as only then is torch needed
    (the launcher must start fast enough to refuse a busy work dir at once)."""
    from idhhpc.train.stopping import request_stop

    return request_stop()


_ACTIVE: _Guard | None = None


@contextlib.contextmanager
def handling_signals(in_process: bool = False) -> Iterator[None]:
    """Record SIGINT/SIGTERM/SIGHUP for the runner while the block runs (main thread only)."""
    global _ACTIVE
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    guard, previous = _Guard(in_process), {}
    for sig in SIGNALS:
        previous[sig] = signal.signal(sig, guard.on_signal)
    _ACTIVE = guard
    try:
        yield
    finally:
        _ACTIVE = None
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def received() -> int | None:
    """The signal that asked this launch to stop, if any."""
    return _ACTIVE.signum if _ACTIVE is not None else None


def check() -> None:
    """Raise LaunchInterrupted if a signal arrived; call between submissions and while polling."""
    signum = received()
    if signum is not None:
        raise LaunchInterrupted(signum)


def track(job: Any) -> None:
    if _ACTIVE is not None:
        _ACTIVE.jobs.append(job)


def untrack(job: Any) -> None:
    if _ACTIVE is not None and job in _ACTIVE.jobs:
        _ACTIVE.jobs.remove(job)


def _groups(jobs: Iterable[Any]) -> list[int]:
    """Process groups of local jobs (their controller's pid); in-process jobs have none."""
    return [int(job.job_id) for job in jobs if getattr(job, "_process", None) is not None]


def _any_alive(jobs: list[Any]) -> bool:
    """Reap finished controllers first: a zombie still counts as a member of its process group."""
    for job in jobs:
        job._process.poll()
    return any(group_alive(g) for g in _groups(jobs))


def kill_groups(jobs: Iterable[Any]) -> None:
    for pgid in _groups(jobs):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)


def stop_jobs(jobs: Iterable[Any], grace_s: float = GRACE_S) -> None:
    """SIGTERM each local job's controller, wait up to ``grace_s``, SIGKILL what is left, reap."""
    jobs = [job for job in jobs if getattr(job, "_process", None) is not None]
    if not jobs:
        return
    started = time.monotonic()
    log.info("stopping %d job(s): %s", len(jobs), ", ".join(str(job.job_id) for job in jobs))
    for job in jobs:
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(job.job_id), signal.SIGTERM)
    while time.monotonic() < started + grace_s and _any_alive(jobs):
        time.sleep(0.1)
    left = [g for g in _groups(jobs) if group_alive(g)]
    if left:
        log.warning("job(s) %s still running after %.0f s: killing them", ", ".join(map(str, left)), grace_s)
        kill_groups(jobs)
    for job in jobs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            job._process.wait(timeout=5)
    log.info("jobs stopped after %.1f s", time.monotonic() - started)


def exit_like_signal(signum: int) -> NoReturn:
    """End this process by ``signum`` itself, so the parent sees "killed by SIGTERM" (``$?`` 143)."""
    sys.stdout.flush()
    sys.stderr.flush()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
    os._exit(128 + signum)  # reached only if the signal is blocked
