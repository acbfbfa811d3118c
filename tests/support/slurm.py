"""Probe the Slurm test cluster and read job states for assertions (built on ``idhhpc.hpc.sacct``).

Tests skip or fail early with a reason instead of hanging on a cluster that is not there, and
read what Slurm recorded for a job: sacct keeps every requeue, submitit only the latest state.
"""

from __future__ import annotations

import shutil
import subprocess
import time

import pytest

from idhhpc.hpc.sacct import FINAL_STATES, sacct_rows

_USABLE_NODE_STATES = ("idle", "mixed", "allocated", "completing")
_FIELDS = ("JobID", "State", "ExitCode", "Start", "End", "Partition", "AllocTRES")


def _run(cmd: list[str], timeout_s: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)


def cluster_unavailable_reason() -> str | None:
    """Say why jobs cannot run on the Slurm cluster here, or None when they can.

    Checks the client tools, a node that can take jobs (sinfo) and accounting
    (sacct), since tests read job states back from sacct.
    """
    for tool in ("sinfo", "sbatch", "sacct"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not on PATH (start one with slurm/start-test-cluster.sh)"
    try:
        nodes = _run(["sinfo", "-h", "-o", "%T"])
        if nodes.returncode != 0:
            return f"sinfo failed, slurmctld is not up: {nodes.stderr.strip()}"
        states = nodes.stdout.split()
        if not any(state.rstrip("*~#!%$@^-") in _USABLE_NODE_STATES for state in states):
            return f"no Slurm node can take jobs (node states: {states or 'none'})"
        accounting = _run(["sacct", "-n", "-X", "-S", "now-1minutes"])
        if accounting.returncode != 0:
            return f"sacct failed, slurmdbd is not up: {accounting.stderr.strip()}"
    except subprocess.TimeoutExpired as error:
        return f"`{' '.join(error.cmd)}` did not answer within {error.timeout} s"
    return None


def sacct_records(job_id: str, *, with_requeues: bool = False) -> list[dict[str, str]]:
    """sacct's allocation records of JOB_ID (one per array task); ``with_requeues`` adds the
    records of earlier runs of a requeued job, oldest first (REQUEUED, COMPLETED)."""
    return sacct_rows([job_id], _FIELDS, duplicates=with_requeues, timeout_s=20)


def _is_final_and_complete(record: dict[str, str]) -> bool:
    return (
        record["State"] in FINAL_STATES
        and record["End"] not in ("", "Unknown")
        and bool(record["Partition"])
        and bool(record["AllocTRES"])
    )


def wait_for_final_state(job_id: str, timeout_s: float = 60.0, poll_s: float = 0.5) -> str:
    """Wait until sacct records a final state for JOB_ID and return it.

    A job's result file can appear before slurmctld has told slurmdbd that the
    job ended, and a short job's end can reach slurmdbd before its start (the
    record then lacks partition and resources), so wait for a complete record.
    """
    deadline = time.monotonic() + timeout_s
    states: list[str] = []
    while time.monotonic() < deadline:
        records = sacct_records(job_id)
        states = [record["State"] for record in records]
        if records and all(_is_final_and_complete(record) for record in records):
            return states[-1]
        time.sleep(poll_s)
    raise TimeoutError(f"job {job_id} has no final sacct state after {timeout_s} s (last seen: {states})")


def slurm_marks(timeout_s: int, *marks: pytest.MarkDecorator) -> list[pytest.MarkDecorator]:
    """``pytestmark`` of a module that needs the Slurm test cluster: its tests skip, with the
    reason, when the cluster is not up, and each gets ``timeout_s``."""
    reason = cluster_unavailable_reason()
    return [pytest.mark.slurm, *marks, pytest.mark.timeout(timeout_s),
            pytest.mark.skipif(reason is not None, reason=f"Slurm test cluster not up: {reason}")]


def node_addresses(partition: str = "debug") -> dict[str, str]:
    """Every node of PARTITION and its NodeAddr (on the test cluster: node1, node2 and their
    network namespaces' addresses)."""
    listed = _run(["sinfo", "-h", "-N", "-p", partition, "-o", "%N %o"]).stdout.split()
    return dict(zip(listed[::2], listed[1::2]))
