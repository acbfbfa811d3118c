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

Preemption is not a failure. submitit counts a USR2 as a time-out (against ``max_timeouts``)
from wall time alone, so a job preempted late enough, or any job with ``time_min`` of 10 or
less, is failed after ``max_timeouts`` preemptions; and it ignores SIGTERM, which is how Slurm
announces preemption without ``preempt_send_user_signal`` (then kills the job unsaved). Inside a
Slurm job :func:`install_slurm_handlers` asks Slurm instead (``scontrol show job``: PreemptTime
set, or EndTime still far away, means preempted) and checkpoints on a SIGTERM that announces a
preemption; any other SIGTERM (scancel, node shutdown) makes the trainer save ``last.pt``
before Slurm's SIGKILL. In a local job SIGTERM or Ctrl-C from the launcher does the same.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import signal
import subprocess
import threading
import time
from typing import Any, Callable

import submitit
from submitit.core.job_environment import JobEnvironment, SignalHandler

from idhhpc.train.distributed import is_follower_task
from idhhpc.train.stopping import StopRequest, TrainingInterrupted

log = logging.getLogger(__name__)

SIGNAL_DELAY_S = 90
"""submitit's default lead time of the time-limit signal (``#SBATCH --signal=USR2@90``)."""
EARLY_S = 90
"""Slurm may send the time-limit signal up to a minute earlier than asked (73-88 s seen for @60)."""
_UNSET = ("", "None", "Unknown", "N/A", "(null)")


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
        self._install_signal_handlers()
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

    def _install_signal_handlers(self) -> None:
        """In a job process's main thread (after submitit installed its own): Slurm-aware
        preemption on Slurm, save-and-stop on SIGTERM/SIGINT in a local job."""
        if threading.current_thread() is not threading.main_thread() or os.environ.get("SUBMITIT_DEBUG_JOB_ID"):
            return
        executor = os.environ.get("SUBMITIT_EXECUTOR")
        if executor == "slurm":
            install_slurm_handlers(on_term=self._save_and_stop)
        elif executor == "local":
            signal.signal(signal.SIGTERM, self._on_stop_signal)
            signal.signal(signal.SIGINT, self._on_stop_signal)

    def _on_stop_signal(self, signum: int, frame: Any) -> None:
        if self._stop is not None and self._stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: give up at once
        log.warning("%s: saving last.pt at the next micro-step, then stopping", signal.Signals(signum).name)
        self._save_and_stop()

    def _save_and_stop(self) -> None:
        if self._stop is not None:
            self._stop.request()


# --- Slurm: tell preemption from the time limit --------------------------------------------------

def scontrol_job() -> dict[str, str]:
    """This job's ``scontrol show job`` fields ({} when Slurm cannot be asked)."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    job_id = f"{array}_{task}" if array and task else os.environ.get("SLURM_JOB_ID")
    if not job_id:
        return {}
    try:
        out = subprocess.run(["scontrol", "show", "-o", "job", job_id], capture_output=True, text=True,
                             timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    return dict(token.split("=", 1) for token in out.split() if "=" in token)


def slurm_time(value: str | None) -> float | None:
    """A time as scontrol prints it (local time, no zone) as a Unix timestamp; None when unset."""
    if value is None or value in _UNSET:
        return None
    try:
        return dt.datetime.strptime(value, "%Y-%m-%dT%H:%M:%S").timestamp()
    except ValueError:
        return None


def classify_signal(fields: dict[str, str], now: float | None = None, signal_delay_s: float = SIGNAL_DELAY_S,
                    early_s: float = EARLY_S) -> str | None:
    """"preempted", "timed-out", or None when the fields do not tell (then submitit decides).

    PreemptTime set: slurmctld chose the job for preemption. Otherwise the time-limit signal comes
    ``signal_delay_s`` (up to a minute more) before EndTime; a signal long before it was sent by
    hand or by an administrator (``scancel --signal USR2``) and is a preemption too.
    """
    if not fields:
        return None
    if slurm_time(fields.get("PreemptTime")) is not None:
        return "preempted"
    end = slurm_time(fields.get("EndTime"))
    if end is None:
        return None
    remaining = end - (time.time() if now is None else now)
    return "timed-out" if remaining <= signal_delay_s + early_s else "preempted"


def install_slurm_handlers(on_term: Callable[[], None] | None = None) -> bool:
    """Make submitit's handler of this process ask Slurm whether a USR2 is a time-out, and
    checkpoint on a SIGTERM that announces a preemption; ``on_term`` handles any other SIGTERM.
    False when this is not a submitit Slurm job (nothing changed)."""
    handler = getattr(signal.getsignal(JobEnvironment._usr_sig()), "__self__", None)
    if not isinstance(handler, SignalHandler) or os.environ.get("SUBMITIT_EXECUTOR") != "slurm":
        return False
    stock = handler.has_timed_out

    def has_timed_out() -> bool:
        verdict = classify_signal(scontrol_job())
        if verdict is None:
            log.warning("scontrol could not tell preemption from time-out: using submitit's wall-time rule")
            return stock()
        log.info("Slurm says this signal means %s", verdict)
        return verdict == "timed-out"

    handler.has_timed_out = has_timed_out  # an instance attribute shadows the method
    handling = threading.Event()

    def on_sigterm(signum: int, frame: Any) -> None:
        if handling.is_set():  # SIGTERM again (our own requeue ends the step)
            return
        handling.set()
        if slurm_time(scontrol_job().get("PreemptTime")) is not None:
            log.warning("SIGTERM with PreemptTime set: preempted; checkpointing and requeueing")
            handler.checkpoint_and_try_requeue(signum, frame)
        elif on_term is not None:
            log.warning("SIGTERM (cancelled, or the node is going down): saving last.pt before Slurm kills the job")
            on_term()

    signal.signal(signal.SIGTERM, on_sigterm)
    return True
