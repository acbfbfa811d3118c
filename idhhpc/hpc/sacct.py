"""Slurm's accounting (sacct): the one place jobs' recorded states are read.

submitit keeps only a job's latest state, while sacct keeps every requeue and knows at once
that a dependent was cancelled because its parent failed.
"""

from __future__ import annotations

import subprocess

#: sacct states after which a job record does not change any more.
FINAL_STATES = frozenset(
    {
        "BOOT_FAIL",
        "CANCELLED",
        "COMPLETED",
        "DEADLINE",
        "FAILED",
        "NODE_FAIL",
        "OUT_OF_MEMORY",
        "PREEMPTED",
        "TIMEOUT",
    }
)


def sacct_rows(job_ids: list[str], fields: tuple[str, ...], *, duplicates: bool = False,
               timeout_s: float = 30) -> list[dict[str, str]]:
    """sacct's allocation records (``-X``: one per job or array task) of ``job_ids``.

    ``duplicates`` adds the records of earlier runs of a requeued job, oldest first. ``State``
    keeps only its first word (``CANCELLED by 0`` becomes ``CANCELLED``); the uid after ``by``,
    if any, goes to ``CancelledBy``.
    """
    if not job_ids:
        return []
    cmd = ["sacct", "-n", "-P", "-X", "-j", ",".join(job_ids), "-o", ",".join(fields)]
    if duplicates:
        cmd.append("--duplicates")
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"sacct for job(s) {','.join(job_ids)} failed: {result.stderr.strip()}")
    rows = [dict(zip(fields, line.split("|"))) for line in result.stdout.splitlines() if line]
    for row in rows:
        if "State" in row:
            words = row["State"].split()
            row["State"] = (words or [""])[0]
            if len(words) == 3 and words[1] == "by":
                row["CancelledBy"] = words[2]
    return rows
