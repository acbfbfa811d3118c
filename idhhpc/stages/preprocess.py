"""Stage ``preprocess``: one task per shard (a job array), then one index merge.

Shard membership is a pure function of the manifest and ``preprocess.shard_size``, so every
array task, on any executor, agrees on which patients it owns, and a rerun rebuilds only the
shards whose inputs or settings changed.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from idhhpc.config import JobConfig
from idhhpc.data import cohort as ingest
from idhhpc.data.cases import CaseFiles
from idhhpc.data.preprocess import PreprocessSettings, settings_hash
from idhhpc.data.shards import ShardReport, build_shard, merge_index
from idhhpc.stages.cohort import TooFewPatients
from idhhpc.workdir import WorkDir

log = logging.getLogger(__name__)


def preprocess_settings(config: JobConfig) -> PreprocessSettings:
    p = config.preprocess
    return PreprocessSettings(size=p.size, margin=p.margin, clip_percentiles=tuple(p.clip_percentiles),
                              affine_atol=p.affine_atol, nan_policy=p.nan_policy)


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
    if data.root.is_dir():
        return max(1, sum(1 for p in data.root.iterdir() if p.name.endswith("_nifti")))
    return data.phantom.patients if data.phantom else 1


def run_preprocess_shard(config: JobConfig, shard_index: int, progress: bool = False) -> ShardReport | None:
    """Build one shard; an index past the end (an over-sized array) has nothing to do."""
    plan = shard_plan(config)
    if shard_index >= len(plan):
        log.info("shard %d: nothing to do (%d shards planned)", shard_index, len(plan))
        return None
    return build_shard(shard_index, plan[shard_index], WorkDir(config.work_dir).shards, preprocess_settings(config),
                       list(config.data.modalities), config.preprocess.compression, progress=progress)


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
    index = merge_index(work.shards, n_shards, settings_hash(preprocess_settings(config), list(config.data.modalities)))
    rejected = [(q["patient_id"], q["reason"]) for q in index.get("quarantined", [])]
    known = ingest.read_quarantine(work.quarantine)
    ingest.write_quarantine(known + [entry for entry in rejected if entry not in known], work.quarantine)
    summary = PreprocessSummary(len(index["patients"]), n_shards, rejected)
    log.info("%s", summary.table())
    if summary.patients < config.data.min_patients:
        raise TooFewPatients(f"only {summary.patients} patients preprocessed, data.min_patients={config.data.min_patients}\n{summary.table()}")
    return summary
