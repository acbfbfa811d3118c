"""Stage wrappers that add what a person needs to act on a failure, without changing the stage.

A wrapper only annotates the exception (``add_note``) and re-raises it, so the job still fails
with the stage's own error and traceback; submitit's trace and the runner's message carry the note.
"""

from __future__ import annotations

import logging
import types

from idhhpc.config import JobConfig
from idhhpc.data.cases import CaseFiles
from idhhpc.data.shards import ShardReport

log = logging.getLogger(__name__)


def preprocess_shard(config: JobConfig, shard_index: int) -> ShardReport | None:
    """``run_preprocess_shard`` that names the patient it was working on when it failed."""
    from idhhpc.stages.preprocess import run_preprocess_shard

    try:
        return run_preprocess_shard(config, shard_index)
    except Exception as err:
        note = f"idhhpc: preprocess shard {shard_index} failed on {_patient_phrase(err, config, shard_index)}"
        err.add_note(note)
        log.error("%s", note)
        raise


def failing_patient(tb: types.TracebackType | None) -> str | None:
    """The patient of the innermost ``CaseFiles`` local along a traceback (the case being processed)."""
    found = None
    while tb is not None:
        for value in tb.tb_frame.f_locals.values():
            if isinstance(value, CaseFiles):
                found = value.patient_id
        tb = tb.tb_next
    return found


def _patient_phrase(err: BaseException, config: JobConfig, shard_index: int) -> str:
    patient = failing_patient(err.__traceback__)
    if patient:
        return f"patient {patient}"
    try:
        from idhhpc.stages.preprocess import shard_plan

        planned = [case.patient_id for case in shard_plan(config)[shard_index]]
    except Exception:  # the manifest itself may be what failed
        return "an unknown patient (the shard's patients could not be read)"
    return f"one of its patients {', '.join(planned)}"
