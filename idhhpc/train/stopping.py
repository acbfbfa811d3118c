"""Asking a running trainer to stop at the next micro-step boundary (tests, preemption)."""

from __future__ import annotations

import threading
from pathlib import Path

_ACTIVE: set["StopRequest"] = set()
_ACTIVE_LOCK = threading.Lock()


class TrainingInterrupted(RuntimeError):
    """Raised by ``train`` after it saved ``last.pt`` in response to a stop request."""

    def __init__(self, checkpoint: Path, epoch: int, micro_step: int) -> None:
        super().__init__(f"training stopped on request at epoch {epoch}, micro-step {micro_step}; resume from {checkpoint}")
        self.checkpoint = checkpoint
        self.epoch = epoch
        self.micro_step = micro_step


class StopRequest:
    """A thread-safe flag the trainer polls at every micro-step boundary.

    ``at_micro_step`` stops once that many micro-steps of the whole run (counted over epochs
    from the start of training, not of this call) are done: tests use it to interrupt at an
    exact point.
    """

    def __init__(self, at_micro_step: int | None = None) -> None:
        self._event = threading.Event()
        self.at_micro_step = at_micro_step

    def request(self) -> None:
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    def should_stop(self, global_micro_step: int) -> bool:
        return self.is_set() or (self.at_micro_step is not None and global_micro_step >= self.at_micro_step)


def register(stop: StopRequest) -> None:
    with _ACTIVE_LOCK:
        _ACTIVE.add(stop)


def unregister(stop: StopRequest) -> None:
    with _ACTIVE_LOCK:
        _ACTIVE.discard(stop)


def request_stop() -> int:
    """Ask every training loop running in this process to save and stop; returns how many were asked."""
    with _ACTIVE_LOCK:
        for stop in _ACTIVE:
            stop.request()
        return len(_ACTIVE)
