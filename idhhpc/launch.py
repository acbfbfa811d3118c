"""``python -m idhhpc.launch``: turn a job file into jobs, on this machine or on Slurm.

A thin command line over :func:`idhhpc.api.launch` (the same from a notebook).
With no ``--job`` the built-in default job runs the whole pipeline on a phantom cohort on the
local CPU. ``--partition`` implies Slurm; ``--dry-run`` prints the planned jobs and submits nothing.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path

from idhhpc import api
from idhhpc.config import ConfigError
from idhhpc.constants import STAGES
from idhhpc.hpc import interrupts
from idhhpc.hpc.executors import SlurmNotAvailable
from idhhpc.hpc.lock import LockBusy
from idhhpc.hpc.runner import StageFailed, format_table

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


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (128 + signal number when interrupted)."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    choices = dict(overrides=args.overrides, stages=args.stages.split(",") if args.stages else None,
                   executor=args.executor, partition=args.partition)
    try:
        if args.cancel:
            return api.cancel(api.load(args.job, **choices))
        if args.dry_run:
            print(api.plan(args.job, **choices))
            return 0
        result = api.launch(args.job, rerun=args.rerun, progress=not args.quiet, **choices)
    except LockBusy as err:
        print(f"error: {err}", file=sys.stderr)
        return LOCK_BUSY
    except interrupts.LaunchInterrupted as stop:
        return stop.exit_code
    except (ConfigError, SlurmNotAvailable, StageFailed, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(format_table(result.steps))
    print(_where(result))
    return _wait_for(result) if args.wait and result.handed_over else 0


def _where(result: api.LaunchResult) -> str:
    from idhhpc.tracking.runs import describe_links

    lines = [f"work dir: {result.work_dir}"]
    if result.report is not None:
        lines.append(f"report:   {result.report}")
    return "\n".join(lines + describe_links(result.config, result.context))


def _wait_for(result: api.LaunchResult) -> int:
    """Follow the chain to its end; name the stage that failed and the stages Slurm cancelled.
    Ctrl-C stops only the following: the chain runs on (``--cancel`` stops it)."""
    try:
        outcome = api.follow(result)
    except KeyboardInterrupt:
        print("stopped following the chain; it keeps running (cancel it with --cancel)", file=sys.stderr)
        return 130
    print(format_table(result.steps))
    if not outcome.ok:
        print(outcome.report(), file=sys.stderr)
    elif result.report is not None:
        print(f"report:   {result.report}")
    return 0 if outcome.ok else 1


if __name__ == "__main__":
    status = main()
    if status in (128 + signal.SIGINT, 128 + signal.SIGTERM, 128 + signal.SIGHUP):
        interrupts.exit_like_signal(status - 128)  # the caller sees "killed by SIGTERM", as without us
    sys.exit(status)
