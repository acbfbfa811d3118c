"""The Python API: what ``python -m idhhpc.launch`` and ``python -m idhhpc.predict`` do, as plain
functions that return plain objects (the command lines are thin wrappers over them).

    from idhhpc import api
    result = api.launch(overrides=["train.epochs=2"])      # the built-in dry-run job, here
    api.predict(result.work_dir / "checkpoints/fit/model.pt", "runs/phantom-cohort/UCSF-PDGM-0004_nifti")

``job`` is a job file, a loaded :class:`~idhhpc.config.JobConfig` or None (the built-in job);
errors are the exceptions the command lines turn into messages (``ConfigError``, ``LockBusy``,
``StageFailed``, ``LaunchInterrupted``, ...). Heavy modules (torch, the stages) are imported only
once the work-dir lock is held, so a busy work dir fails fast.
"""

from __future__ import annotations

import logging
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from idhhpc.config import JobConfig, apply_overrides, load_job, save_resolved
from idhhpc.context import LaunchContext
from idhhpc.hpc import interrupts
from idhhpc.hpc.executors import require_sbatch, sbatch_preview
from idhhpc.hpc.lock import WorkDirLock
from idhhpc.hpc.freshness import plan_skips
from idhhpc.hpc.pipeline import build_steps
from idhhpc.hpc.runner import StepRecord, cancel_submitted, run_locally, submit_to_slurm
from idhhpc.stages.step import Step
from idhhpc.workdir import WorkDir

log = logging.getLogger("idhhpc.launch")

Job = str | Path | JobConfig | None


@dataclass
class LaunchResult:
    """One launch: its job, its MLflow context, the steps (state, job ids, logs, results) and
    which were skipped because their outputs verified. On Slurm the steps are SUBMITTED and
    ``handed_over`` says the chain's finish job now holds the work dir."""

    config: JobConfig
    context: LaunchContext
    steps: list[StepRecord]
    skipped: set[str] = field(default_factory=set)
    handed_over: bool = False

    @property
    def work_dir(self) -> Path:
        return WorkDir(self.config.work_dir).root

    @property
    def report(self) -> Path | None:
        path = WorkDir(self.config.work_dir).report
        return path if path.is_file() else None


def load(job: Job = None, overrides: Sequence[str] = (), stages: Sequence[str] | None = None,
         executor: str | None = None, partition: str | None = None) -> JobConfig:
    """The frozen job: ``job`` with ``overrides`` (``"train.epochs=5"``), a stage subset, an
    executor (``debug``, ``local``, ``slurm``) and a Slurm partition (which implies ``slurm``)."""
    overrides = list(overrides)
    if stages:
        overrides.append(f"stages=[{','.join(stages)}]")
    if partition:
        overrides += [f"hpc.resources.partition={partition}", "hpc.executor=slurm"]
    if executor:
        overrides.append(f"hpc.executor={executor}")
    if isinstance(job, JobConfig):
        return apply_overrides(job, overrides)
    return load_job(job, overrides)


def plan(job: Job = None, **choices: Any) -> str:
    """What :func:`launch` would run, with resources, dependencies and, on Slurm, the sbatch text."""
    config = load(job, **choices)
    return describe_plan(build_steps(list(config.stages)), config)


def launch(job: Job = None, overrides: Sequence[str] = (), stages: Sequence[str] | None = None,
           executor: str | None = None, partition: str | None = None, rerun: bool = False,
           progress: bool = False) -> LaunchResult:
    """Run the job's steps (skipping those whose stamps and outputs verify, unless ``rerun``) here, or
    submit them to Slurm; the work-dir lock is held for the launch (or handed to the chain)."""
    config = load(job, overrides, stages, executor, partition)
    if config.hpc.executor == "slurm":
        require_sbatch()
    lock = WorkDirLock(config.work_dir)
    lock.acquire()  # before the stage modules (and torch) are imported
    handed_over = False
    try:
        steps = build_steps(list(config.stages))
        result = _launch(steps, config, lock, rerun, progress)
        handed_over = result.handed_over
        return result
    finally:
        if not handed_over:
            lock.release()


def _launch(steps: list[Step], config: JobConfig, lock: WorkDirLock, rerun: bool, progress: bool) -> LaunchResult:
    """Plan, open the MLflow launch run, run or submit, and end the run with how it went."""
    from idhhpc.tracking.runs import close_launch_run, open_launch_run

    work = WorkDir(config.work_dir)
    remove_partial_files(work)
    skip = set() if rerun else plan_skips(steps, config)
    if skip:
        log.info("skipping stages whose outputs verify: %s (--rerun to run them)", ", ".join(sorted(skip)))
    context = open_launch_run(config, lock.info.token)
    lock.update(tracking_uri=context.tracking_uri, run_id=context.parent_run_id)
    status, handed_over = "FAILED", False
    try:
        save_resolved(config, work.resolved_config)
        folder = work.launches / time.strftime("%Y%m%d-%H%M%S")
        if config.hpc.executor == "slurm":
            result = _submit(steps, config, context, lock, folder, skip)
        else:
            result = LaunchResult(config, context, _run_here(steps, config, context, lock, folder, skip, progress), skip)
        status, handed_over = "FINISHED", result.handed_over
        return result
    except interrupts.LaunchInterrupted:
        status = "KILLED"
        raise
    finally:
        if not handed_over:  # else the chain's finish job ends the run
            close_launch_run(config, status, context)


def _run_here(steps: list[Step], config: JobConfig, context: LaunchContext, lock: WorkDirLock, folder: Path,
              skip: set[str], progress: bool) -> list[StepRecord]:
    try:
        with interrupts.handling_signals(in_process=config.hpc.executor == "debug"):
            return run_locally(steps, config, config.hpc.executor, folder, progress=progress, skip=skip,
                               on_start=lambda step, job: _record_job(lock, step, job), context=context)
    except interrupts.LaunchInterrupted as stop:
        log.warning("interrupted by %s: every job is stopped (training jobs save last.pt first); run the same "
                    "command again to resume", signal.Signals(stop.signum).name)
        raise


def _submit(steps: list[Step], config: JobConfig, context: LaunchContext, lock: WorkDirLock, folder: Path,
            skip: set[str]) -> LaunchResult:
    """Submit the chain and its finish job and hand the lock to them; a failed or interrupted
    submission cancels what it submitted."""
    from idhhpc.hpc.finish import STEP, submit_finish

    jobs: list = []
    try:
        with interrupts.handling_signals():
            records, jobs = submit_to_slurm(steps, config, folder, skip, context)
            finish = submit_finish(config, folder, jobs, lock.info.token, context) if jobs else None
    except BaseException:
        cancel_submitted(jobs)
        raise
    if finish is None:  # every step verified: nothing to run
        return LaunchResult(config, context, records, skip)
    lock.hand_over_to_slurm(sorted({j.job_id.split("_")[0] for j in jobs}, key=int) + [finish.job_id])
    records.append(StepRecord(STEP, [finish.job_id], [str(finish.paths.stdout)], "SUBMITTED", jobs=[finish]))
    return LaunchResult(config, context, records, skip, handed_over=True)


def follow(result: LaunchResult):
    """Wait for a submitted Slurm chain to end; the outcome names the failed and cancelled stages."""
    from idhhpc.hpc.chain import wait_for_chain

    return wait_for_chain(result.steps, result.config)


def cancel(job: Job = None, overrides: Sequence[str] = ()) -> int:
    """Cancel the launch holding the job's work dir; the exit status ``--cancel`` returns."""
    from idhhpc.hpc.cancel import cancel_launch

    return cancel_launch(load(job, overrides))


def predict(model: str | Path, patient_dir: str | Path, out: str | Path | None = None, device: str = "auto",
            tumor_mask: str | Path | None = None, force: bool = False,
            tracking_uri: str | None = None) -> dict[str, Any]:
    """Predict and explain one patient folder with an exported ``model.pt`` or a registered model
    (``models:/idhhpc-idh-b0/1``); the record ``prediction.json`` holds. Raises ``InvalidInput``."""
    from idhhpc.predict import predict_with

    return predict_with(model, Path(patient_dir), None if out is None else Path(out), device,
                        None if tumor_mask is None else Path(tumor_mask), force, tracking_uri)


def remove_partial_files(work: WorkDir) -> list[Path]:
    """Delete what interrupted atomic writes left (``.name.XXXX.tmp``, see ``idhhpc.atomic``): a
    job killed mid-write (SIGKILL after the grace time, a crash on a full disk) cannot clean up.
    Safe only while this launch holds the work dir, so nothing else is writing there."""
    lock_temps = f"{work.lock.name}."
    found = [p for p in work.root.rglob(".*.tmp") if p.is_file() and not p.name.startswith(lock_temps)]
    for path in found:
        path.unlink(missing_ok=True)
    if found:
        log.info("removed %d partial file(s) of interrupted writes: %s", len(found),
                 ", ".join(str(p.relative_to(work.root)) for p in found[:5]) + (" ..." if len(found) > 5 else ""))
    return found


def _record_job(lock: WorkDirLock, step: str, job: object) -> None:
    """Local jobs' process groups go into the lock: it stays live while any of them runs."""
    if getattr(job, "_process", None) is not None:
        lock.add_job(job.job_id, step)


def describe_plan(steps: list[Step], config: JobConfig) -> str:
    """What would run, with resources, dependencies and, on Slurm, the sbatch text."""
    folder = WorkDir(config.work_dir).launches / "<timestamp>"
    lines = [f"job {config.name}: executor={config.hpc.executor}, work dir {config.work_dir}", ""]
    for step in steps:
        tasks = len(step.tasks(config))
        resources = config.hpc.for_stage(step.stage)
        after = ", ".join(step.after) or "-"
        lines.append(f"[{step.name}] {step.target}  tasks={tasks}  after={after}")
        if config.hpc.executor == "slurm":
            dependency = "afterok:<" + ">:<".join(step.after) + ">" if step.after else None
            lines.append(sbatch_preview(folder, resources, f"idhhpc-{step.name}", dependency, tasks))
    if config.hpc.executor == "slurm":
        lines.append("[finish] idhhpc.hpc.finish:finish_chain  tasks=1  after=every step (afterany): closes the "
                     "MLflow launch run and releases the work dir")
    return "\n".join(lines)
