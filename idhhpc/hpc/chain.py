"""Wait for a submitted Slurm chain and say how each step ended, from Slurm's accounting.

submitit waits job by job and, for a job cancelled before it started, waits for a result file
that never comes; sacct knows at once that a dependent was cancelled because its parent failed
(``kill_on_invalid_dep``), so the chain is followed there and results are read only for failures.
"""

from __future__ import annotations

import logging
import pwd
import time
from dataclasses import dataclass, field

from idhhpc.config import JobConfig
from idhhpc.hpc.failures import describe_failure
from idhhpc.hpc.runner import SKIPPED, StepRecord
from idhhpc.hpc.sacct import FINAL_STATES, sacct_rows
from idhhpc.hpc.squeue import HELD_REASONS, SlurmUnreachable, queued

log = logging.getLogger(__name__)

_FIELDS = ("JobID", "State", "Reason", "Start", "End")


@dataclass
class ChainOutcome:
    failures: list[str] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures and not self.cancelled

    def report(self) -> str:
        lines = [f"FAILED {text}" for text in self.failures]
        lines += [f"CANCELLED {text}" for text in self.cancelled]
        return "\n".join(lines)


def job_states(job_ids: list[str]) -> dict[str, dict[str, str]]:
    """sacct's latest record per job or array task (or unexpanded array) by JobID."""
    return {row["JobID"]: row for row in sacct_rows(job_ids, _FIELDS)}


def _state_of(job_id: str, states: dict[str, dict[str, str]]) -> dict[str, str] | None:
    """A task's own record, or its array's unexpanded one (``46_[0-1]``) when it never started."""
    if job_id in states:
        return states[job_id]
    base = job_id.split("_")[0]
    return next((row for key, row in states.items() if key == base or key.startswith(f"{base}_[")), None)


REQUEUABLE = frozenset({"NODE_FAIL", "PREEMPTED", "REQUEUED"})
"""sacct states that Slurm follows with a rerun when the job may be requeued (``JobRequeue=1``):
for a few seconds sacct's latest record reads NODE_FAIL or PREEMPTED (with End set) while
slurmctld already lists the job PENDING again."""


def _is_final(row: dict[str, str] | None, job_id: str, live: dict[str, tuple[str, str]]) -> bool:
    if row is None or row["State"] not in FINAL_STATES or row["End"] in ("", "Unknown"):
        return False
    return not (row["State"] in REQUEUABLE and _still_queued(job_id, live))


def _still_queued(job_id: str, live: dict[str, tuple[str, str]]) -> bool:
    base = job_id.split("_")[0]
    return job_id in live or any(key == base or key.startswith(f"{base}_[") for key in live)


def _live_jobs(bases: list[str]) -> dict[str, tuple[str, str]]:
    """What slurmctld lists now; while it cannot be asked, nothing counts as requeued."""
    try:
        return queued(bases)
    except SlurmUnreachable as err:
        log.info("squeue unavailable (%s): trusting sacct alone", err)
        return {}


def wait_for_chain(records: list[StepRecord], config: JobConfig, poll_s: float = 2.0,
                   timeout_s: float | None = None) -> ChainOutcome:
    """Poll sacct (and squeue) until every submitted job has ended; set each record's state and
    return what failed. A job Slurm requeues (node failure, preemption) is followed to its rerun;
    a held job is reported once with the commands that release it."""
    jobs = [job for record in records for job in record.jobs]
    bases = sorted({job.job_id.split("_")[0] for job in jobs}, key=int)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    reported: set[str] = set()
    while True:
        states, live = job_states(bases), _live_jobs(bases)
        if all(_is_final(_state_of(job.job_id, states), job.job_id, live) for job in jobs):
            break
        _report_held(live, reported)
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"Slurm chain not finished after {timeout_s} s")
        time.sleep(poll_s)
    return _classify(records, states, config)


def _report_held(live: dict[str, tuple[str, str]], reported: set[str]) -> None:
    for job_id, (state, reason) in live.items():
        if reason in HELD_REASONS and job_id not in reported:
            reported.add(job_id)
            log.warning("job %s is %s (%s) and will not start by itself: after checking its node, run "
                        "`scontrol update nodename=<node> state=resume` if the node is drained, then "
                        "`scontrol release %s`", job_id, state, reason, job_id)


def _classify(records: list[StepRecord], states: dict[str, dict[str, str]], config: JobConfig) -> ChainOutcome:
    outcome = ChainOutcome()
    for record in records:
        if record.state == SKIPPED or not record.jobs:
            continue
        rows = [(job, _state_of(job.job_id, states)) for job in record.jobs]
        seen = sorted({row["State"] for _, row in rows})
        record.state = seen[0] if len(seen) == 1 else "/".join(seen)
        for job, row in rows:
            if row["State"] == "CANCELLED":
                outcome.cancelled.append(f"{record.step} (job {job.job_id}): {_cancel_phrase(row)}")
            elif row["State"] != "COMPLETED":
                error = job.exception() if row["State"] == "FAILED" else None
                outcome.failures.append(describe_failure(record.step, job.job_id, error, config, job.paths.stderr,
                                                         row["State"]))
    return outcome


def _cancel_phrase(row: dict[str, str]) -> str:
    """Slurm records the reason only for plain jobs (``Dependency``); a job that never started
    under ``kill_on_invalid_dep`` was cancelled because a stage it waits for failed. For a job
    that ran, sacct's Reason is still the one it was pending for (``Dependency``), not why it
    ended: the message names who cancelled it instead (scancel, also ``scancel --signal=KILL``,
    which Slurm carries out as a cancel: SIGTERM first, so training saves ``last.pt``)."""
    if row["Start"] in ("", "None", "Unknown"):
        return f"never started: a stage it depends on failed (sacct reason {row['Reason']})"
    by = f" by {_user(row['CancelledBy'])}" if row.get("CancelledBy") else ""
    return f"cancelled while running{by} (scancel or an administrator); run the same command again to resume"


def _user(uid: str) -> str:
    """``root (uid 0)`` for ``0``; the bare uid when it names nobody here."""
    try:
        return f"{pwd.getpwuid(int(uid)).pw_name} (uid {uid})"
    except (KeyError, ValueError):
        return f"uid {uid}"
