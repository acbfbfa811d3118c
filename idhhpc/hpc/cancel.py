"""``python -m idhhpc.launch --cancel``: stop whatever launch holds a work dir, and close its runs.

The work-dir lock says who that is. A Slurm chain is cancelled with scancel (a running training
job gets SIGTERM first and saves ``last.pt``), its MLflow launch run and the child runs still
marked RUNNING are ended KILLED, and the lock is released, so the next launch resumes at once.
A local launch on this host is sent SIGTERM, which it handles like Ctrl-C.
"""

from __future__ import annotations

import logging
import time

from idhhpc.config import JobConfig
from idhhpc.context import LaunchContext
from idhhpc.hpc.lock import LockInfo, WorkDirLock, stop_local_holder
from idhhpc.hpc.squeue import SlurmUnreachable, queued, scancel
from idhhpc.workdir import WorkDir

log = logging.getLogger(__name__)

DRAIN_S = 120.0


def cancel_launch(config: JobConfig) -> int:
    """Cancel the launch holding ``config.work_dir``; the exit status for the command line."""
    work = WorkDir(config.work_dir)
    lock = WorkDirLock(work.root)
    info = lock.read()
    if info is None:
        print(f"nothing to cancel: no launch holds {work.root}")
        return 1
    if info.kind == "local":
        return _cancel_local(info, work)
    return _cancel_chain(config, lock, info)


def _cancel_local(info: LockInfo, work: WorkDir) -> int:
    if stop_local_holder(info):
        print(f"stopped {info.describe()}; {work.root} is free (relaunch to resume)")
        return 0
    print(f"{work.root} is held by {info.describe()}: stop it on {info.host} with `kill -TERM {info.pid}`")
    return 1


def _cancel_chain(config: JobConfig, lock: WorkDirLock, info: LockInfo) -> int:
    from idhhpc.tracking.runs import close_launch_run

    ids = info.slurm_job_ids
    try:
        scancel(ids)
        deadline = time.monotonic() + DRAIN_S
        while queued(ids) and time.monotonic() < deadline:
            time.sleep(1.0)
    except SlurmUnreachable as err:
        print(f"cannot cancel Slurm chain {','.join(ids)}: {err}")
        return 1
    close_launch_run(config, "KILLED", LaunchContext(info.tracking_uri, info.run_id, info.token))
    lock.release(info.token)
    print(f"cancelled Slurm chain {','.join(ids)} (MLflow run {info.run_id} KILLED); {lock.dir} is free. "
          "Relaunch to resume: finished stages are skipped, training resumes from last.pt.")
    return 0
