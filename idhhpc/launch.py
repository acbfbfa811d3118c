"""``python -m idhhpc.launch``: turn a job file into jobs, on this machine or on Slurm.

With no ``--job`` the built-in default job runs the whole pipeline on a phantom cohort on the
local CPU. ``--partition`` implies Slurm; ``--dry-run`` prints the planned jobs and submits nothing.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from idhhpc.config import ConfigError, JobConfig, load_job, save_resolved
from idhhpc.constants import STAGES
from idhhpc.hpc.executors import SlurmNotAvailable, require_sbatch, sbatch_preview
from idhhpc.hpc.pipeline import build_steps, plan_skips, previous_config
from idhhpc.hpc.runner import StageFailed, format_table, run_locally, submit_to_slurm
from idhhpc.stages.step import Step
from idhhpc.workdir import WorkDir

log = logging.getLogger("idhhpc.launch")


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
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = resolve_config(args)
        steps = build_steps(list(config.stages))
        if args.dry_run:
            print(describe_plan(steps, config))
            return 0
        return launch(steps, config, args)
    except (ConfigError, SlurmNotAvailable, StageFailed, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def launch(steps: list[Step], config: JobConfig, args: argparse.Namespace) -> int:
    from idhhpc.tracking.runs import close_launch_run, open_launch_run

    if config.hpc.executor == "slurm":
        require_sbatch()
    work = WorkDir(config.work_dir)
    work.root.mkdir(parents=True, exist_ok=True)
    skip = set() if args.rerun else plan_skips(steps, config, previous_config(config))
    if skip:
        log.info("skipping stages whose outputs verify: %s (--rerun to run them)", ", ".join(sorted(skip)))
    config = open_launch_run(config)
    save_resolved(config, work.resolved_config)
    folder = work.launches / time.strftime("%Y%m%d-%H%M%S")
    if config.hpc.executor == "slurm":
        records, _ = submit_to_slurm(steps, config, folder, skip)
        print(format_table(records))
        print(_where(config))
        if not args.wait:
            return 0
        code = _wait_for(records, config)
        close_launch_run(config, "FINISHED" if code == 0 else "FAILED")
        return code
    try:
        records = run_locally(steps, config, config.hpc.executor, folder, progress=not args.quiet, skip=skip)
    except BaseException:
        close_launch_run(config, "FAILED")
        raise
    close_launch_run(config, "FINISHED")
    print(format_table(records))
    print(_where(config))
    return 0


def _where(config: JobConfig) -> str:
    from idhhpc.tracking.runs import describe_links

    work = WorkDir(config.work_dir)
    lines = [f"work dir: {work.root}"]
    if work.report.is_file():
        lines.append(f"report:   {work.report}")
    return "\n".join(lines + describe_links(config))


def _wait_for(records: list, config: JobConfig) -> int:
    """Follow the chain to its end; name the stage that failed and the stages Slurm cancelled."""
    from idhhpc.hpc.chain import wait_for_chain

    outcome = wait_for_chain(records, config)
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
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
