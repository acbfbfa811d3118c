"""What a job process runs: a step's function, after setting up the job's log and threads.

submitit captures a job's stdout and stderr in its log files, but Python's logging writes
nothing below WARNING until someone configures it, so without this a stage's progress never
reaches its log. Every step is submitted wrapped in a :class:`StageCall`, which in the job's
process:

- sends the ``idhhpc`` loggers to stdout, one timestamped line per record, and logs when the
  step starts (host, pid, task, threads) and ends (seconds, or the error);
- sets torch's threads to the job's ``cpus_per_task`` (local jobs also get OMP_NUM_THREADS and
  friends from their controller), so parallel local jobs do not oversubscribe the cores;
- in a local job that does not checkpoint, turns the launcher's SIGTERM into an exception, so the
  job ends at once (every output is written atomically) instead of being killed after the grace
  time. Training jobs handle SIGTERM themselves (``idhhpc.train.preemption``): they save first.

A step whose function is checkpointable (a training job) gets a wrapper that is checkpointable
too, so submitit's preemption handling still finds and requeues it.

A pipeline step's job records its content stamp when it succeeds (:mod:`idhhpc.hpc.stamps`), in
the job itself: a Slurm chain records its steps with no launcher waiting for it.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import socket
import sys
import threading
import time
from typing import Any, Callable

import submitit

from idhhpc.context import LaunchContext, using

log = logging.getLogger("idhhpc.job")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
STOPPED_EXIT = 75
"""Exit status of a job that stopped on request (EX_TEMPFAIL: run it again to resume)."""


class StageInterrupted(BaseException):
    """A local job was asked to stop (the launcher got Ctrl-C or SIGTERM).

    A ``BaseException``, as ``KeyboardInterrupt`` is: a stop is not an error, and the handlers
    that turn one patient's error into that patient's rejection (``except Exception``) must not
    quarantine the patients a stop happened to interrupt and write the shard as complete."""


def job_executor() -> str | None:
    """"local" or "slurm" inside a submitit job process, None in the launcher (debug jobs too)."""
    if os.environ.get("SUBMITIT_DEBUG_JOB_ID"):
        return None
    kind = os.environ.get("SUBMITIT_EXECUTOR")
    return kind if kind in ("local", "slurm") else None


def _task_label() -> str:
    try:
        env = submitit.JobEnvironment()
    except RuntimeError:
        return ""
    return f"job {env.job_id}, task {env.global_rank + 1}/{env.num_tasks}"


def configure_job_logging() -> None:
    """idhhpc's INFO records and everyone's warnings to stdout (the job's ``.out``), once per
    process; submitit logs there itself, and other libraries' INFO chatter stays out."""
    root = logging.getLogger()
    if not any(getattr(handler, "idhhpc_job", False) for handler in root.handlers):
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        handler.addFilter(lambda record: not record.name.startswith("submitit"))
        handler.idhhpc_job = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    logging.getLogger("idhhpc").setLevel(logging.INFO)


def stopped_on_request(error: BaseException) -> bool:
    """The job was asked to stop (its outputs and ``last.pt`` are saved), it did not fail. The
    trainer's ``TrainingInterrupted`` is matched by name: hpc must not import train's internals."""
    return isinstance(error, StageInterrupted) or type(error).__name__ == "TrainingInterrupted"


def _exit_now() -> None:
    """End a job that stopped on request at once. Tearing down the interpreter (collecting the
    model, the data, the traceback's frames) took seconds on a loaded machine, past the
    launcher's grace time; everything worth keeping is written and closed already."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(STOPPED_EXIT)


def _stop_on_sigterm(signum: int, frame: Any) -> None:
    raise StageInterrupted(f"stopped by {signal.Signals(signum).name} (the launch was interrupted)")


class StageCall:
    """``StageCall(function, step, threads, context)(config, *task)`` runs ``function(config, *task)``
    as a job of the launch ``context`` (its MLflow parent run: :mod:`idhhpc.context`); with
    ``stamped`` (a pipeline step, not the chain's finish job) rank 0 records the step's stamp."""

    def __init__(self, function: Callable[..., Any], step: str, threads: int,
                 context: LaunchContext | None = None, stamped: bool = False) -> None:
        self.function, self.step, self.threads, self.context = function, step, threads, context
        self.stamped = stamped

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        executor = job_executor()
        if executor is not None:
            self._prepare_process(executor)
        where = _task_label() if executor else "in the launcher"
        log.info("%s: started on %s (pid %d, %s, %d threads): %s", self.step, socket.gethostname(), os.getpid(),
                 where or "no task", _torch_threads(), _purpose(self.function))
        started = time.monotonic()
        try:
            with using(self.context):
                result = self.function(*args, **kwargs)
        except BaseException as err:
            log.error("%s: stopped after %.1f s: %s: %s", self.step, time.monotonic() - started,
                      type(err).__name__, str(err).splitlines()[0] if str(err) else "")
            if executor is not None and stopped_on_request(err):
                _exit_now()
            raise
        if self.stamped and _is_rank_zero():  # the other ranks of a data-parallel job end before rank 0 exports
            from idhhpc.hpc.stamps import record  # the step registry, imported only in a step's job

            record(self.step, args[0], tuple(args[1:]))
        log.info("%s: done in %.1f s: %s", self.step, time.monotonic() - started, summarize(result))
        return result

    def _prepare_process(self, executor: str) -> None:
        configure_job_logging()
        torch = sys.modules.get("torch")
        if torch is not None:
            torch.set_num_threads(self.threads)
        else:  # read when torch is imported
            os.environ["OMP_NUM_THREADS"] = str(self.threads)
        checkpointable = hasattr(self.function, "checkpoint")
        if executor == "local" and not checkpointable and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, _stop_on_sigterm)


class CheckpointableStageCall(StageCall, submitit.helpers.Checkpointable):
    """The wrapper of a checkpointable function: its resubmission wraps the function's own."""

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        inner = self.function.checkpoint(*args, **kwargs)
        again = type(self)(inner.function, self.step, self.threads, self.context, self.stamped)
        return submitit.helpers.DelayedSubmission(again, *inner.args, **inner.kwargs)


def stage_call(function: Callable[..., Any], step: str, threads: int,
               context: LaunchContext | None = None, stamped: bool = False) -> StageCall:
    """The job to submit for ``function``: checkpointable exactly when ``function`` is."""
    kind = CheckpointableStageCall if hasattr(function, "checkpoint") else StageCall
    return kind(function, step, threads, context, stamped)


def _is_rank_zero() -> bool:
    try:
        return submitit.JobEnvironment().global_rank == 0
    except RuntimeError:  # not a submitit job: the launcher itself (debug jobs)
        return True


def _torch_threads() -> int:
    torch = sys.modules.get("torch")
    return torch.get_num_threads() if torch is not None else 0


def _purpose(function: Callable[..., Any]) -> str:
    """What the step does: the first line of its stage module's docstring."""
    inner = getattr(function, "train_fn", function)
    doc = getattr(sys.modules.get(getattr(inner, "__module__", "")), "__doc__", None) or ""
    return doc.strip().splitlines()[0] if doc.strip() else getattr(inner, "__name__", type(inner).__name__)


def summarize(result: Any, limit: int = 300) -> str:
    """A one-line account of a step's result: scalars as they are, collections by their size."""
    if dataclasses.is_dataclass(result) and not isinstance(result, type):
        result = {f.name: getattr(result, f.name) for f in dataclasses.fields(result)}
    if isinstance(result, dict):
        parts = [f"{key}={_short(value)}" for key, value in result.items()]
        text = ", ".join(parts)
    else:
        text = _short(result)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple, dict, set)):
        return f"<{len(value)} items>"
    return str(value)
