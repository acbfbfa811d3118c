"""Stage ``preprocess``: one task per shard (a job array), then one index merge.

Shard membership is a pure function of the manifest and ``preprocess.shard_size``, so every
array task, on any executor, agrees on which patients it owns, and a rerun rebuilds only the
shards whose inputs or settings changed.
"""

from __future__ import annotations

import json
import logging
import math
import types
from dataclasses import dataclass
from pathlib import Path

from idhhpc.config import JobConfig
from idhhpc.data import cohort as ingest
from idhhpc.data import egd
from idhhpc.data.cases import CaseFiles, TooFewPatients
from idhhpc.data.dataset import verify_shards
from idhhpc.data.preprocess import settings_hash
from idhhpc.data.shards import (
    ShardReport,
    build_shard,
    inputs_fingerprint,
    merge_index,
    shard_name,
    sidecar_inputs,
)
from idhhpc.stages.checks import newer
from idhhpc.stages.step import Step
from idhhpc.workdir import WorkDir

log = logging.getLogger(__name__)


def shard_hash(config: JobConfig) -> str:
    return settings_hash(config.preprocess, list(config.data.modalities))


def shard_plan(config: JobConfig) -> list[list[CaseFiles]]:
    cases = ingest.read_manifest(WorkDir(config.work_dir).manifest, config.data.modalities)
    size = config.preprocess.shard_size
    return [cases[i : i + size] for i in range(0, len(cases), size)]


def count_shards(config: JobConfig) -> int:
    """Shards the manifest needs; before the cohort stage ran, an upper bound from the data folder."""
    manifest = WorkDir(config.work_dir).manifest
    if manifest.is_file():
        return len(shard_plan(config))
    return max(1, math.ceil(_candidate_patients(config) / config.preprocess.shard_size))


def _candidate_patients(config: JobConfig) -> int:
    data = config.data
    if data.layout == "csv":
        return max(1, sum(1 for _ in open(data.cases_csv)) - 1) if data.cases_csv.is_file() else 1
    if data.layout == "egd":
        return max(1, len(egd.subject_folders(data.root))) if egd.subjects_dir(data.root).is_dir() else 1
    if data.root.is_dir():
        return max(1, sum(1 for p in data.root.iterdir() if p.name.endswith("_nifti")))
    return data.phantom.patients if data.phantom else 1


def shard_tasks(config: JobConfig) -> list[tuple]:
    return [(i,) for i in range(count_shards(config))]


def run_preprocess_shard(config: JobConfig, shard_index: int, progress: bool = False) -> ShardReport | None:
    """Build one shard; an index past the end (an over-sized array) has nothing to do.

    A failure keeps its own exception and traceback, with a note naming the patient that was
    being processed, so the job's log and the launcher's message say whose files to look at.
    """
    try:
        return _build(config, shard_index, progress)
    except Exception as err:
        note = f"idhhpc: preprocess shard {shard_index} failed on {_patient_phrase(err, config, shard_index)}"
        err.add_note(note)
        log.error("%s", note)
        raise


def _build(config: JobConfig, shard_index: int, progress: bool) -> ShardReport | None:
    plan = shard_plan(config)
    if shard_index >= len(plan):
        log.info("shard %d: nothing to do (%d shards planned)", shard_index, len(plan))
        return None
    cases, total = plan[shard_index], sum(len(shard) for shard in plan)
    first = sum(len(shard) for shard in plan[:shard_index])
    log.info("shard %d/%d: preprocessing patients %d-%d of %d (%s)", shard_index + 1, len(plan), first + 1,
             first + len(cases), total, ", ".join(case.patient_id for case in cases))
    report = build_shard(shard_index, cases, WorkDir(config.work_dir).shards, config.preprocess,
                         list(config.data.modalities), config.preprocess.compression, progress=progress)
    log.info("shard %d/%d %s: %d of %d patients stored, %d quarantined, %.1f s; patients done %d/%d",
             shard_index + 1, len(plan), report.status, report.n_written, report.n_planned, len(report.quarantined),
             report.seconds, _patients_done(config, plan), total)
    return report


def _patients_done(config: JobConfig, plan: list[list[CaseFiles]]) -> int:
    """Patients of every shard (this task's and the other array tasks') whose sidecar says it is
    built with these settings: the array's progress as far as this task can see it."""
    shards, shash, done = WorkDir(config.work_dir).shards, shard_hash(config), 0
    for index, cases in enumerate(plan):
        try:
            sidecar = json.loads((shards / f"{shard_name(index)}.json").read_text())
        except (OSError, ValueError):
            continue
        if sidecar.get("settings_hash") == shash and len(sidecar.get("planned", [])) == len(cases):
            done += len(cases)
    return done


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
        planned = [case.patient_id for case in shard_plan(config)[shard_index]]
    except Exception:  # the manifest itself may be what failed
        return "an unknown patient (the shard's patients could not be read)"
    return f"one of its patients {', '.join(planned)}"


@dataclass
class PreprocessSummary:
    patients: int
    shards: int
    quarantined: list[tuple[str, str]]

    def table(self) -> str:
        lines = [f"preprocess: {self.patients} patients in {self.shards} shards, {len(self.quarantined)} quarantined"]
        lines += [f"  {pid}: {reason}" for pid, reason in self.quarantined]
        return "\n".join(lines)


def run_merge_index(config: JobConfig) -> PreprocessSummary:
    """Verify every shard, write ``shards/index.json`` and add preprocessing rejects to the quarantine."""
    work = WorkDir(config.work_dir)
    n_shards = len(shard_plan(config))
    log.info("checking %d shards against their sidecars and writing %s", n_shards, work.index)
    index = merge_index(work.shards, n_shards, shard_hash(config))
    rejected = [(q["patient_id"], q["reason"]) for q in index.get("quarantined", [])]
    known = ingest.read_quarantine(work.quarantine)
    ingest.write_quarantine(known + [entry for entry in rejected if entry not in known], work.quarantine)
    summary = PreprocessSummary(len(index["patients"]), n_shards, rejected)
    log.info("%s", summary.table())
    if summary.patients < config.data.min_patients:
        raise TooFewPatients(f"only {summary.patients} patients preprocessed, data.min_patients={config.data.min_patients}\n{summary.table()}")
    return summary


def outputs_verify(config: JobConfig) -> bool:
    """The index is newer than the manifest, made with these settings (the code's shard settings
    hash) from the same input files and labels, and every shard's checksum matches it."""
    work = WorkDir(config.work_dir)
    if not newer(work.index, work.manifest):
        return False
    index = json.loads(work.index.read_text())
    plan = shard_plan(config)
    if index.get("settings_hash") != shard_hash(config) or len(index["shards"]) != len(plan):
        return False
    if any(sidecar_inputs(work.shards, i) != inputs_fingerprint(cases) for i, cases in enumerate(plan)):
        return False  # an input file or a label changed since its shard was built
    verify_shards(work.index, index)
    return True


def index_outputs(config: JobConfig) -> list[Path]:
    return [WorkDir(config.work_dir).index]


STEPS = (
    Step("preprocess", "preprocess", run_preprocess_shard, tasks=shard_tasks, outputs_verify=outputs_verify,
         reads=("data", "preprocess"), needs=("cohort",)),
    Step("preprocess-merge", "preprocess", run_merge_index, outputs_verify=outputs_verify, outputs=index_outputs,
         reads=("data", "preprocess"), needs=("preprocess",)),
)
