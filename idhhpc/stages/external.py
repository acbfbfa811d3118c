"""Stage ``external``: score the launch's trained models on other sites' cohorts (job key ``external``).

Each cohort is a job of its own in ``external/<name>/`` (its layout, the training job's
preprocessing and modalities): the cohort stage's discovery, the preprocessing stage's shards
(one array for every cohort's shards), then one job per launch that merges the shards, screens
every patient against the internal ones (:mod:`idhhpc.data.leakage`), optionally harmonises
(:mod:`idhhpc.data.harmonise`), scores with the fold ensemble and the final fit as the evaluate
stage does, and reports (:mod:`idhhpc.evaluate.external`). Nothing is trained, so
``--stages external`` on a finished launch scores a new cohort alone.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from typing import Any

from idhhpc.atomic import atomic_write_text
from idhhpc.config import ExternalCohortConfig, JobConfig
from idhhpc.data import cohort as ingest
from idhhpc.data import egd, harmonise, leakage
from idhhpc.data.dataset import ShardDataset, read_case
from idhhpc.devices import resolve_device
from idhhpc.data.splits import load_splits, non_test_patients
from idhhpc.data.ucsf_pdgm import find_metadata_csv
from idhhpc.evaluate.exported import score_models
from idhhpc.evaluate.external import (
    ExternalCohort,
    ModelScores,
    mlflow_metrics,
    segmentation_dice,
    write_external_report,
)
from idhhpc.predictor import Predictor
from idhhpc.stages.cohort import run_cohort
from idhhpc.stages.preprocess import count_shards, run_merge_index, run_preprocess_shard
from idhhpc.stages.step import Step
from idhhpc.tracking.records import log_external
from idhhpc.tracking.runs import stage_run
from idhhpc.workdir import FIT_RUN, WorkDir

log = logging.getLogger(__name__)


def cohort_job(config: JobConfig, cohort: ExternalCohortConfig) -> JobConfig:
    """The training job pointed at one external cohort, in its own work dir."""
    return config.model_copy(update={"work_dir": WorkDir(config.work_dir).external(cohort.name),
                                     "data": cohort.data_config(config.data), "external": []})


def run_external_cohorts(config: JobConfig) -> dict[str, Any]:
    """Every external cohort's manifest, quarantine and (EGD) site facts."""
    summaries = {}
    for cohort in config.external:
        job = cohort_job(config, cohort)
        summaries[cohort.name] = run_cohort(job).table()
        sites = egd.cohort_site_facts(job.data.root) if job.data.layout == "egd" else {}
        atomic_write_text(WorkDir(job.work_dir).sites, sites_csv(sites))
    if not config.external:
        log.info("no external cohorts in this job (job key external): nothing to do")
    return summaries


def external_shards(config: JobConfig) -> list[tuple]:
    """One array task per (cohort, shard); one idle task when the job names no cohort."""
    tasks = [(i, s) for i, cohort in enumerate(config.external) for s in range(count_shards(cohort_job(config, cohort)))]
    return tasks or [(-1, 0)]


def run_external_shard(config: JobConfig, cohort_index: int, shard_index: int):
    if cohort_index < 0:
        return None
    return run_preprocess_shard(cohort_job(config, config.external[cohort_index]), shard_index)


def run_external_scoring(config: JobConfig) -> dict[str, Any]:
    """Merge, screen, score and report every external cohort; metrics on the launch run."""
    results = {}
    for cohort in config.external:
        job = cohort_job(config, cohort)
        run_merge_index(job)
        with stage_run(config, f"external-{cohort.name}", role="external") as run:
            summary = score_cohort(config, cohort, job)
            log_external(run, config, WorkDir(job.work_dir).reports, mlflow_metrics(summary))
        results[cohort.name] = summary
    return results


def score_cohort(config: JobConfig, cohort: ExternalCohortConfig, job: JobConfig) -> dict[str, Any]:
    work, external = WorkDir(config.work_dir), WorkDir(job.work_dir)
    screening = leakage.screen(work.index, external.index, len(config.data.modalities), cohort.leakage_threshold,
                               brats_aliases(config), leakage.external_brats_ids(job.data.cases_csv))
    quarantine = ingest.read_quarantine(external.quarantine)
    ingest.write_quarantine(quarantine + [r for r in screening.quarantine_rows() if r not in quarantine],
                            external.quarantine)
    log.info("external %s: %d patients kept, %d duplicates of internal patients excluded", cohort.name,
             len(screening.kept), len(screening.duplicates))
    if not screening.kept:
        raise ValueError(f"external cohort {cohort.name}: no patient left to score; see {external.quarantine}")
    raw = ShardDataset(external.index, screening.kept)
    dataset = scoring_dataset(config, cohort, external, screening.kept) or raw
    scored = score_models(config, dataset)
    models = {name: ModelScores(name, s.probs, s.threshold) for name, s in scored.items()}
    headline = config.evaluate.ensemble if config.evaluate.ensemble in models else FIT_RUN
    unharmonised = None
    if cohort.harmonise != "none":
        plain = score_models(config, raw)[headline]
        unharmonised = ModelScores(f"{headline}, not harmonised", plain.probs, plain.threshold)
    report = ExternalCohort(cohort.name, list(raw.patient_ids), raw.labels, models, headline, unharmonised,
                            read_sites(external), ingest.read_quarantine(external.quarantine), screening.duplicates,
                            screening.compared_with, screening.threshold, screening.closest_kept, cohort.harmonise)
    report.dice = fit_dice(config, external, dataset, screening.kept)
    internal = json.loads(work.metrics.read_text()) if work.metrics.is_file() else None
    return write_external_report(report, external.reports, internal, config.evaluate.bootstrap, config.seed)


def fit_dice(config: JobConfig, external: WorkDir, dataset, kept: list[str]) -> dict[str, float]:
    """Dice of the final fit's segmentation where it segments (``model.head``) and masks exist."""
    export = WorkDir(config.work_dir).exported_model(FIT_RUN)
    if not export.is_file():
        return {}
    predictor = Predictor.load(export, resolve_device(config.train.device))
    pairs = ((dataset[i]["image"].numpy(), read_case(external.index, pid).tumor) for i, pid in enumerate(kept))
    return segmentation_dice(predictor, pairs)


def scoring_dataset(config: JobConfig, cohort: ExternalCohortConfig, external: WorkDir, kept: list[str]):
    """The harmonised external patients, the standard fitted on the internal non-test patients."""
    if cohort.harmonise == "none":
        return None
    training = non_test_patients(load_splits(config))
    standard = harmonise.fit_standard(WorkDir(config.work_dir).index, training, len(config.data.modalities))
    return harmonise.HarmonisedDataset(external.index, kept, standard)


def brats_aliases(config: JobConfig) -> dict[str, str]:
    """BraTS 2021 IDs of the internal patients, from UCSF-PDGM's metadata (training on UCSF-PDGM)."""
    data = config.data
    if data.layout != "ucsf_pdgm":
        return {}
    try:
        metadata = data.metadata_csv or find_metadata_csv(data.root)
    except FileNotFoundError:
        return {}
    internal = set(json.loads(WorkDir(config.work_dir).index.read_text())["patients"])
    return leakage.brats_aliases(metadata, internal)


SITE_HEADER = ("patient_id", *egd.SITE_FIELDS)


def sites_csv(sites: dict[str, dict[str, str]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(SITE_HEADER)
    writer.writerows([pid, *(facts.get(k, "") for k in egd.SITE_FIELDS)] for pid, facts in sorted(sites.items()))
    return buffer.getvalue()


def read_sites(work: WorkDir) -> dict[str, dict[str, str]]:
    if not work.sites.is_file():
        return {}
    with open(work.sites, newline="") as handle:
        return {row["patient_id"]: {k: row.get(k, "") for k in egd.SITE_FIELDS} for row in csv.DictReader(handle)}


STEPS = (
    Step("external", "external", run_external_cohorts),
    Step("external-preprocess", "external", run_external_shard, tasks=external_shards),
    Step("external-score", "external", run_external_scoring),
)
