"""Run pipeline steps through submitit: in-process, as local subprocesses, or as Slurm jobs.

Locally a step waits for the one before it and its array tasks run a few at a time (submitit's
local executor would start them all at once). On Slurm the whole chain is submitted up front,
linked by ``afterok`` dependencies, and the launcher returns unless asked to wait.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import submitit
from tqdm import tqdm

from idhhpc.config import JobConfig
from idhhpc.context import LaunchContext
from idhhpc.hpc import interrupts
from idhhpc.hpc.executors import make_executor, require_sbatch
from idhhpc.hpc.failures import describe_failure
from idhhpc.hpc.jobcall import stage_call
from idhhpc.hpc.pipeline import declared
from idhhpc.hpc.squeue import SlurmUnreachable, scancel
from idhhpc.stages.step import Step

log = logging.getLogger(__name__)

SKIPPED = "SKIPPED"


class StageFailed(RuntimeError):
    """A step's job failed; the message carries the stage, the job and the tail of its log."""


@dataclass
class StepRecord:
    step: str
    job_ids: list[str] = field(default_factory=list)
    logs: list[str] = field(default_factory=list)
    state: str = "PENDING"
    seconds: float = 0.0
    results: list[Any] = field(default_factory=list)
    jobs: list[Any] = field(default_factory=list, repr=False)


OnStart = Callable[[str, submitit.Job], None]


def run_locally(steps: list[Step], config: JobConfig, kind: str, folder: Path, progress: bool = True,
                skip: set[str] | frozenset[str] = frozenset(), on_start: OnStart | None = None,
                context: LaunchContext | None = None) -> list[StepRecord]:
    """Run the steps one after another; steps named in ``skip`` are recorded as SKIPPED.

    ``on_start(step, job)`` is told of every job as it starts (the work-dir lock records local
    jobs' process groups). A signal recorded by :mod:`idhhpc.hpc.interrupts` stops the running
    jobs and raises ``LaunchInterrupted``.
    """
    records = []
    for step in steps:
        record = StepRecord(step.name)
        records.append(record)
        if step.name in skip:
            record.state = SKIPPED
            continue
        start = time.monotonic()
        tasks = step.tasks(config)
        resources = config.hpc.for_stage(step.stage)
        executor = make_executor(kind, folder, resources, f"idhhpc-{step.name}")
        log.info("%s: %d task(s) on the %s executor", step.name, len(tasks), kind)
        function = stage_call(step.function, step.name, resources.cpus_per_task, context, stamped=declared(step))
        record.results = _run_throttled(executor, function, step, config, tasks, config.hpc.local_parallelism, record,
                                        progress, on_start)
        record.state, record.seconds = "COMPLETED", time.monotonic() - start
        log.info("%s: completed in %.1f s", step.name, record.seconds)
    return records


def _run_throttled(executor: submitit.Executor, function: Any, step: Step, config: JobConfig, tasks: list[tuple],
                   parallelism: int, record: StepRecord, progress: bool, on_start: OnStart | None) -> list[Any]:
    pending, running, results = list(enumerate(tasks)), [], {}
    bar = tqdm(total=len(tasks), desc=step.name, unit="task", disable=not progress or len(tasks) < 2, leave=False)
    try:
        while pending or running:
            while pending and len(running) < parallelism:
                interrupts.check()
                position, args = pending.pop(0)
                job = executor.submit(function, config, *args)
                interrupts.track(job)
                record.job_ids.append(str(job.job_id))
                record.logs.append(str(job.paths.stdout))
                running.append((position, job))
                if on_start is not None:
                    on_start(step.name, job)
            finished = [(p, j) for p, j in running if _is_done(j)]
            for position, job in finished:
                running.remove((position, job))
                interrupts.untrack(job)
                results[position] = _result_or_raise(step, job, record, config)
                bar.update(1)
            interrupts.check()
            if running and not finished:
                time.sleep(0.2)
    except BaseException as err:
        interrupts.stop_jobs(job for _, job in running)  # a signal or a failed task: leave no process behind
        signum = interrupts.received()
        if signum is not None and not isinstance(err, interrupts.LaunchInterrupted):
            record.state = "KILLED"
            raise interrupts.LaunchInterrupted(signum) from err
        raise
    finally:
        bar.close()
    return [results[i] for i in range(len(tasks))]


def _is_done(job: submitit.Job) -> bool:
    return isinstance(job, submitit.DebugJob) or job.done()


def _result_or_raise(step: Step, job: submitit.Job, record: StepRecord, config: JobConfig) -> Any:
    """The job's result, or StageFailed with the stage, the error and what to do about it.

    A debug job is asked for its exception first: its ``result()`` opens pdb on failure,
    which would hang a launch that nobody is watching.
    """
    try:
        error = job.exception() if isinstance(job, submitit.DebugJob) else None
        if error is None:
            return job.results()[0]  # rank 0's result; ``result()`` refuses multi-task (DDP) jobs
    except Exception as err:
        error = err
    record.state = "FAILED"
    stderr = getattr(job.paths, "stderr", None)
    raise StageFailed(describe_failure(step.name, str(job.job_id), error, config, stderr)) from error


def submit_to_slurm(steps: list[Step], config: JobConfig, folder: Path,
                    skip: set[str] | frozenset[str] = frozenset(),
                    context: LaunchContext | None = None) -> tuple[list[StepRecord], list[submitit.Job]]:
    """Submit every step not in ``skip`` at once, each depending on its nearest submitted
    predecessors with ``afterok`` (and ``kill_on_invalid_dep``, so a failure cancels its dependents).

    If a submission fails (slurmctld down, a refused request) or the launcher is interrupted
    meanwhile, the jobs already submitted are cancelled: no half chain is left queued.
    """
    require_sbatch()
    records, jobs_by_step, all_jobs = [], {}, []
    after = {step.name: step.after for step in steps}
    try:
        for step in steps:
            interrupts.check()
            if step.name in skip:
                records.append(StepRecord(step.name, state=SKIPPED))
                continue
            if not step.tasks(config):  # nothing to do (features without a frozen prefix): dependents look past it
                records.append(StepRecord(step.name, state="COMPLETED"))
                continue
            dependency = _dependency(_submitted_ancestors(step.name, after, jobs_by_step), jobs_by_step)
            jobs = submit_step(step, config, folder, dependency, context)
            jobs_by_step[step.name] = jobs
            all_jobs += jobs
            records.append(StepRecord(step.name, [j.job_id for j in jobs], [str(j.paths.stdout) for j in jobs],
                                      "SUBMITTED", jobs=jobs))
    except BaseException:
        cancel_submitted(all_jobs)
        raise
    return records, all_jobs


def submit_step(step: Step, config: JobConfig, folder: Path, dependency: str | None,
                context: LaunchContext | None = None) -> list[submitit.Job]:
    """One step's job (or job array) on Slurm."""
    resources = config.hpc.for_stage(step.stage)
    executor = make_executor("slurm", folder, resources, f"idhhpc-{step.name}", dependency)
    tasks = step.tasks(config)
    function = stage_call(step.function, step.name, resources.cpus_per_task, context, stamped=declared(step))
    if len(tasks) == 1:
        jobs = [executor.submit(function, config, *tasks[0])]
    else:
        jobs = executor.map_array(function, *zip(*[(config, *args) for args in tasks]))
    log.info("%s: submitted %s (%d task(s)%s)", step.name, jobs[0].job_id.split("_")[0], len(jobs),
             f", {dependency}" if dependency else "")
    return jobs


def cancel_submitted(jobs: list[submitit.Job]) -> None:
    """scancel jobs of a chain whose submission did not complete."""
    if not jobs:
        return
    log.warning("submission stopped: cancelling the %d job(s) already submitted", len(jobs))
    try:
        scancel([job.job_id for job in jobs])
    except SlurmUnreachable as err:
        log.error("could not cancel %s: %s; cancel them by hand with scancel",
                  ", ".join(job.job_id for job in jobs), err)


def _submitted_ancestors(name: str, after: dict[str, tuple[str, ...]], jobs_by_step: dict) -> list[str]:
    """The closest steps before ``name`` that were submitted, looking through skipped ones."""
    found: list[str] = []
    for parent in after.get(name, ()):
        found += [parent] if parent in jobs_by_step else _submitted_ancestors(parent, after, jobs_by_step)
    return found


def _dependency(parents: list[str], jobs_by_step: dict[str, list[submitit.Job]]) -> str | None:
    ids = sorted({job.job_id.split("_")[0] for name in parents for job in jobs_by_step.get(name, [])}, key=int)
    return f"afterok:{':'.join(ids)}" if ids else None


def format_table(records: list[StepRecord]) -> str:
    rows = [("step", "state", "jobs", "seconds", "log")]
    for r in records:
        jobs = r.job_ids[0] + (f" (+{len(r.job_ids) - 1})" if len(r.job_ids) > 1 else "") if r.job_ids else "-"
        rows.append((r.step, r.state, jobs, f"{r.seconds:.1f}" if r.seconds else "-", r.logs[0] if r.logs else "-"))
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)
