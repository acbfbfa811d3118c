"""The last job of a Slurm chain: close the launch's MLflow run and release the work-dir lock.

A launch submitted without ``--wait`` returns at once, so no process of the launcher is left to
end its MLflow run or give the work dir back. A small job that depends on every step with
``afterany`` (it runs however they end, also when a failure cancelled its dependents) does it
from the cluster: it reads how the chain ended from sacct, ends the launch run FINISHED, FAILED
or KILLED (together with child runs that a killed job left RUNNING), and releases the lock.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import submitit

from idhhpc.config import JobConfig
from idhhpc.context import LaunchContext, current
from idhhpc.hpc.chain import job_states
from idhhpc.hpc.executors import make_executor
from idhhpc.hpc.jobcall import stage_call
from idhhpc.hpc.lock import release_lock
from idhhpc.hpc.sacct import FINAL_STATES
from idhhpc.tracking.runs import close_launch_run

log = logging.getLogger(__name__)

STEP = "finish"
SETTLE_S = 120.0
"""How long to wait for sacct to record every job of the chain as ended (slurmdbd may lag)."""


def chain_status(states: dict[str, dict[str, str]]) -> str:
    """MLflow's status for the launch: FINISHED, KILLED (cancelled by someone, nothing failed), FAILED."""
    seen = {row["State"] for row in states.values()}
    if seen <= {"COMPLETED"}:
        return "FINISHED"
    if seen <= {"COMPLETED", "CANCELLED"}:
        return "KILLED"
    return "FAILED"


def _settled_states(chain_ids: list[str]) -> dict[str, dict[str, str]]:
    deadline = time.monotonic() + SETTLE_S
    while True:
        states = job_states(chain_ids)
        if states and all(row["State"] in FINAL_STATES for row in states.values()):
            return states
        if time.monotonic() > deadline:
            log.warning("sacct still shows unfinished jobs after %.0f s: %s", SETTLE_S, states)
            return states
        time.sleep(2.0)


def finish_chain(config: JobConfig, chain_ids: list[str], token: str) -> str:
    """Runs as the chain's last job: end the launch run with the chain's outcome, release the lock."""
    states = _settled_states(chain_ids)
    status = chain_status(states)
    log.info("chain %s ended: %s -> MLflow launch run %s %s", ",".join(chain_ids),
             ", ".join(f"{job}={row['State']}" for job, row in sorted(states.items())),
             current().parent_run_id, status)
    close_launch_run(config, status)
    release_lock(config.work_dir, token)
    return status


def submit_finish(config: JobConfig, folder: Path, jobs: list[submitit.Job], token: str,
                  context: LaunchContext | None = None) -> submitit.Job:
    """Submit :func:`finish_chain` after every job of the chain (``afterany``), on the first
    stage's partition with the smallest resources."""
    chain_ids = sorted({job.job_id.split("_")[0] for job in jobs}, key=int)
    resources = config.hpc.for_stage("cohort").model_copy(update={
        "nodes": 1, "tasks_per_node": 1, "gpus_per_node": 0, "cpus_per_task": 1, "mem_gb": 1, "time_min": 15})
    executor = make_executor("slurm", folder, resources, f"idhhpc-{STEP}", f"afterany:{':'.join(chain_ids)}")
    job = executor.submit(stage_call(finish_chain, STEP, 1, context), config, chain_ids, token)
    log.info("%s: submitted %s (afterany:%s): closes the MLflow run and releases the work dir",
             STEP, job.job_id, ":".join(chain_ids))
    return job
