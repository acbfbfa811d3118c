"""Requeue-on-preemption for training jobs run by submitit.

submitit calls ``checkpoint`` from its SIGUSR2 handler, in the main thread, and exits the
process (``sys.exit``) as soon as it returns. A handler that ran on top of the training loop
could only save whatever half-updated state the interrupted frame held. So ``__call__`` runs
the training function in a worker thread and the main thread only waits: the handler asks the
trainer to stop, the trainer saves ``last.pt`` at the next micro-step boundary (a consistent
state) and ends, and only then does ``checkpoint`` return the resubmission, which resumes from
``last.pt``.

In a multi-task (data-parallel) job submitit's handler acts on rank 0 only; the stop request
reaches the other ranks through the trainer, which agrees on it at every micro-step boundary.
Those ranks then wait for rank 0's requeue to end them instead of reporting a failure.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

import submitit

from idhhpc.train.distributed import is_follower_task
from idhhpc.train.stopping import StopRequest, TrainingInterrupted


class TrainingJob(submitit.helpers.Checkpointable):
    """Runs ``train_fn(*args, stop=StopRequest, **kwargs)``; ``train_fn`` must pass ``stop`` to ``train``.

    ``train_fn`` must be picklable (a module-level function) because submitit pickles this job,
    and must resume from its run directory when called again (``train`` does that by itself).
    ``stop_timeout_s`` bounds how long the handler waits for the save; keep it below Slurm's
    signal lead time (submitit's ``signal_delay_s``, 90 s by default).
    """

    def __init__(self, train_fn: Callable[..., Any], stop_timeout_s: float = 75.0) -> None:
        self.train_fn = train_fn
        self.stop_timeout_s = stop_timeout_s
        self._reset_runtime()

    def _reset_runtime(self) -> None:
        self._stop: StopRequest | None = None
        self._thread: threading.Thread | None = None
        self._outcome: dict[str, Any] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {"train_fn": self.train_fn, "stop_timeout_s": self.stop_timeout_s}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset_runtime()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self._stop = StopRequest()
        self._outcome = {}
        self._thread = threading.Thread(target=self._run, args=(args, kwargs), name="idhhpc-train", daemon=True)
        self._thread.start()
        while self._thread.is_alive():
            self._thread.join(timeout=0.5)
        if self.interrupted and is_follower_task():
            self._wait_for_requeue()
        if "error" in self._outcome:
            raise self._outcome["error"]
        return self._outcome["result"]

    def _run(self, args: tuple, kwargs: dict) -> None:
        try:
            self._outcome["result"] = self.train_fn(*args, stop=self._stop, **kwargs)
        except BaseException as error:  # handed to the main thread, which re-raises it
            self._outcome["error"] = error

    def _wait_for_requeue(self) -> None:
        """A follower rank stopped because rank 0 is saving and requeueing the whole job: let the
        requeue end this task (bounded by ``stop_timeout_s``) rather than race it with an error."""
        deadline = time.monotonic() + self.stop_timeout_s
        while time.monotonic() < deadline:
            time.sleep(0.5)

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        """Stop the trainer at a consistent point (it writes ``last.pt``), then resubmit the same call."""
        self.request_stop_and_wait()
        return super().checkpoint(*args, **kwargs)

    def request_stop_and_wait(self) -> bool:
        """True when the trainer has stopped (or was not running); False if it did not stop in time.

        Called from the training thread itself (e.g. from an ``on_epoch_end`` callback) it only
        sets the flag: the trainer saves and stops at the boundary right after the callback.
        """
        if self._stop is None or self._thread is None:
            return True
        self._stop.request()
        if threading.current_thread() is self._thread:
            return True
        deadline = time.monotonic() + self.stop_timeout_s
        while self._thread.is_alive() and time.monotonic() < deadline:
            self._thread.join(timeout=0.1)
        return not self._thread.is_alive()

    @property
    def interrupted(self) -> bool:
        return isinstance(self._outcome.get("error"), TrainingInterrupted)
