"""Slurm's controller view (squeue, scancel, scontrol): what is queued or running right now.

sacct (``idhhpc.hpc.sacct``) says how a job ended; only the controller knows that a job whose
latest sacct record reads NODE_FAIL or PREEMPTED is about to run again (``JobRequeue=1``), or
that it is held and waits for an administrator.
"""

from __future__ import annotations

import logging
import shutil
import subprocess

log = logging.getLogger(__name__)

HELD_REASONS = ("launch_failed_requeued_held", "JobHeldAdmin", "JobHeldUser")
"""squeue reasons of jobs that never start again by themselves."""


class SlurmUnreachable(RuntimeError):
    """squeue/scancel could not ask slurmctld (not installed, down, or another cluster)."""


def _run(cmd: list[str], timeout_s: float = 30) -> subprocess.CompletedProcess[str]:
    if shutil.which(cmd[0]) is None:
        raise SlurmUnreachable(f"{cmd[0]} is not on PATH")
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired as err:
        raise SlurmUnreachable(f"{' '.join(cmd)} did not answer within {timeout_s} s") from err


def queued(job_ids: list[str]) -> dict[str, tuple[str, str]]:
    """``{job or array task id: (state, reason)}`` for the given jobs slurmctld still knows.

    Raises SlurmUnreachable when slurmctld cannot be asked: callers must not read an empty
    answer as "finished" then.
    """
    if not job_ids:
        return {}
    bases = sorted({job_id.split("_")[0] for job_id in job_ids})
    result = _run(["squeue", "-h", "-r", "-o", "%i|%T|%r", "-j", ",".join(bases)])
    if result.returncode != 0:
        if "Invalid job id" in result.stderr:  # every id is unknown: they all ended long ago
            return {}
        raise SlurmUnreachable(f"squeue failed: {result.stderr.strip()}")
    rows = (line.split("|") for line in result.stdout.splitlines() if line.count("|") == 2)
    return {job_id: (state, reason) for job_id, state, reason in rows}


def held(job_ids: list[str]) -> dict[str, str]:
    """The jobs among ``job_ids`` that wait for someone to release them, with the reason."""
    try:
        rows = queued(job_ids)
    except SlurmUnreachable:
        return {}
    return {job_id: reason for job_id, (_, reason) in rows.items() if reason in HELD_REASONS}


def scancel(job_ids: list[str]) -> None:
    """Cancel jobs (whole arrays by their base id); ids Slurm no longer knows are ignored."""
    bases = sorted({job_id.split("_")[0] for job_id in job_ids})
    if not bases:
        return
    result = _run(["scancel", *bases])
    if result.returncode != 0 and "Invalid job id" not in result.stderr:
        raise SlurmUnreachable(f"scancel {' '.join(bases)} failed: {result.stderr.strip()}")
    log.info("cancelled Slurm job(s) %s", ", ".join(bases))


def cluster_name() -> str | None:
    """The ClusterName of the Slurm cluster this machine's clients talk to, or None."""
    try:
        result = _run(["scontrol", "show", "config"], timeout_s=20)
    except SlurmUnreachable:
        return None
    for line in result.stdout.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "ClusterName":
            return value.strip()
    return None
