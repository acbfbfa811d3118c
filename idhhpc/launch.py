"""``python -m idhhpc.launch``: turn a job file into jobs, on this machine or on Slurm.

With no ``--job`` the built-in default job runs the whole pipeline on a phantom cohort on the
local CPU. ``--partition`` implies Slurm; ``--dry-run`` prints the planned jobs and submits nothing.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from pathlib import Path

from idhhpc.config import ConfigError, JobConfig, load_job, save_resolved
from idhhpc.constants import STAGES
from idhhpc.hpc import interrupts
from idhhpc.hpc.executors import SlurmNotAvailable, require_sbatch, sbatch_preview
from idhhpc.hpc.lock import LockBusy, WorkDirLock
from idhhpc.hpc.pipeline import build_steps, plan_skips, previous_config
from idhhpc.hpc.runner import (
    StageFailed,
    StepRecord,
    cancel_submitted,
    format_table,
    run_locally,
    submit_to_slurm,
)
from idhhpc.stages.step import Step
from idhhpc.workdir import WorkDir

log = logging.getLogger("idhhpc.launch")

LOCK_BUSY = 3
"""Exit status when another launch holds the work dir."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m idhhpc.launch", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--job", type=Path, help="YAML job file (default: built-in phantom dry-run job)")
    parser.add_argument("--partition", help="Slurm partition for every stage (implies --executor slurm)")
    parser.add_argument("--executor", choices=["slurm", "local", "debug"], help="override hpc.executor")
    parser.add_argument("--stages", help=f"comma-separated subset of {','.join(STAGES)}")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override any job key, e.g. --set train.epochs=5 (repeatable)")
    parser.add_argument("--dry-run", action="store_true", help="print the planned jobs; submit nothing")
    parser.add_argument("--wait", action="store_true", help="on Slurm, wait for the chain to finish")
    parser.add_argument("--rerun", action="store_true",
                        help="run every stage even when its outputs verify (default: skip verified leading stages)")
    parser.add_argument("--cancel", action="store_true",
                        help="cancel the launch (a Slurm chain, or a local launch on this host) that holds the "
                             "work dir of --job/--set, and close its MLflow runs")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    return parser.parse_args(argv)


def resolve_config(args: argparse.Namespace) -> JobConfig:
    overrides = list(args.overrides)
    if args.stages:
        overrides.append(f"stages=[{args.stages}]")
    if args.partition:
        overrides += [f"hpc.resources.partition={args.partition}", "hpc.executor=slurm"]
    if args.executor:
        overrides.append(f"hpc.executor={args.executor}")
    return load_job(args.job, overrides)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (128 + signal number when interrupted)."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = resolve_config(args)
        if args.cancel:
            from idhhpc.hpc.cancel import cancel_launch

            return cancel_launch(config)
        if args.dry_run:
            print(describe_plan(build_steps(list(config.stages)), config))
            return 0
        if config.hpc.executor == "slurm":
            require_sbatch()
        lock = WorkDirLock(config.work_dir)
        lock.acquire()  # before the stage modules (and torch) are imported: a busy work dir fails fast
        try:
            steps = build_steps(list(config.stages))
        except BaseException:
            lock.release()
            raise
        return launch(steps, config, args, lock)
    except LockBusy as err:
        print(f"error: {err}", file=sys.stderr)
        return LOCK_BUSY
    except interrupts.LaunchInterrupted as stop:
        return stop.exit_code
    except (ConfigError, SlurmNotAvailable, StageFailed, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def launch(steps: list[Step], config: JobConfig, args: argparse.Namespace, lock: WorkDirLock) -> int:
    """Plan, open the MLflow launch run, then run here or submit; ``lock`` is held and released here
    (or handed to the Slurm chain)."""
    from idhhpc.tracking.runs import close_launch_run, open_launch_run

    try:
        work = WorkDir(config.work_dir)
        remove_partial_files(work)
        skip = set() if args.rerun else plan_skips(steps, config, previous_config(config))
        if skip:
            log.info("skipping stages whose outputs verify: %s (--rerun to run them)", ", ".join(sorted(skip)))
        config = open_launch_run(config)
        lock.update(tracking_uri=config.tracking.uri, run_id=config.tracking.parent_run_id)
        save_resolved(config, work.resolved_config)
    except BaseException:
        lock.release()
        raise
    folder = work.launches / time.strftime("%Y%m%d-%H%M%S")
    if config.hpc.executor == "slurm":
        return _launch_on_slurm(steps, config, args, lock, folder, skip)
    try:
        with interrupts.handling_signals(in_process=config.hpc.executor == "debug"):
            records = run_locally(steps, config, config.hpc.executor, folder, progress=not args.quiet, skip=skip,
                                  on_start=lambda step, job: _record_job(lock, step, job))
    except interrupts.LaunchInterrupted as stop:
        close_launch_run(config, "KILLED")
        print(f"interrupted by {signal.Signals(stop.signum).name}: every job is stopped (training jobs save "
              "last.pt first); run the same command again to resume", file=sys.stderr)
        raise
    except BaseException:
        close_launch_run(config, "FAILED")
        raise
    finally:
        lock.release()
    close_launch_run(config, "FINISHED")
    print(format_table(records))
    print(_where(config))
    return 0


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


def _launch_on_slurm(steps: list[Step], config: JobConfig, args: argparse.Namespace, lock: WorkDirLock,
                     folder: Path, skip: set[str]) -> int:
    """Submit the chain and its finish job, hand the lock to them, and wait if asked."""
    from idhhpc.hpc.finish import STEP, submit_finish
    from idhhpc.tracking.runs import close_launch_run

    jobs: list = []
    try:
        with interrupts.handling_signals():
            records, jobs = submit_to_slurm(steps, config, folder, skip)
            finish = submit_finish(config, folder, jobs, lock.info.token) if jobs else None
    except BaseException as err:
        cancel_submitted(jobs)
        close_launch_run(config, "KILLED" if isinstance(err, interrupts.LaunchInterrupted) else "FAILED")
        lock.release()
        raise
    if finish is None:  # every step verified: nothing to run
        close_launch_run(config, "FINISHED")
        lock.release()
    else:
        lock.hand_over_to_slurm(sorted({j.job_id.split("_")[0] for j in jobs}, key=int) + [finish.job_id])
        records.append(StepRecord(STEP, [finish.job_id], [str(finish.paths.stdout)], "SUBMITTED", jobs=[finish]))
    print(format_table(records))
    print(_where(config))
    if not args.wait or finish is None:
        return 0
    return _wait_for(records, config)


def _where(config: JobConfig) -> str:
    from idhhpc.tracking.runs import describe_links

    work = WorkDir(config.work_dir)
    lines = [f"work dir: {work.root}"]
    if work.report.is_file():
        lines.append(f"report:   {work.report}")
    return "\n".join(lines + describe_links(config))


def _wait_for(records: list, config: JobConfig) -> int:
    """Follow the chain to its end; name the stage that failed and the stages Slurm cancelled.
    Ctrl-C stops only the following: the chain runs on (``--cancel`` stops it)."""
    from idhhpc.hpc.chain import wait_for_chain

    try:
        outcome = wait_for_chain(records, config)
    except KeyboardInterrupt:
        print("stopped following the chain; it keeps running (cancel it with --cancel)", file=sys.stderr)
        return 130
    print(format_table(records))
    if not outcome.ok:
        print(outcome.report(), file=sys.stderr)
    elif WorkDir(config.work_dir).report.is_file():
        print(f"report:   {WorkDir(config.work_dir).report}")
    return 0 if outcome.ok else 1


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


if __name__ == "__main__":
    status = main()
    if status in (128 + signal.SIGINT, 128 + signal.SIGTERM, 128 + signal.SIGHUP):
        interrupts.exit_like_signal(status - 128)  # the caller sees "killed by SIGTERM", as without us
    sys.exit(status)
