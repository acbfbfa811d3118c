"""Stage ``cohort``: discover patients (generating the phantom cohort when asked) → manifest."""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from idhhpc.config import JobConfig
from idhhpc.data import cohort as ingest
from idhhpc.data import egd
from idhhpc.data.cases import TooFewPatients
from idhhpc.data.ucsf_pdgm import METADATA_GLOB
from idhhpc.phantoms import generate_cohort
from idhhpc.phantoms.cohort import GENERATOR_VERSION
from idhhpc.stages.checks import newer
from idhhpc.stages.step import Step
from idhhpc.workdir import WorkDir

log = logging.getLogger(__name__)


@dataclass
class CohortSummary:
    included: int
    mutant: int
    wildtype: int
    excluded: dict[str, int]

    def table(self) -> str:
        lines = [f"cohort: {self.included} included ({self.wildtype} wildtype, {self.mutant} mutant)"]
        lines += [f"  excluded {count:4d}  {reason}" for reason, count in sorted(self.excluded.items(), key=lambda kv: -kv[1])]
        return "\n".join(lines)


def run_cohort(config: JobConfig) -> CohortSummary:
    """Write ``cohort/manifest.csv`` and ``cohort/quarantine.csv``; fail below ``min_patients``."""
    data = config.data
    if data.layout == "ucsf_pdgm":
        ensure_phantom_cohort(config)
        cohort = ingest.discover_ucsf_pdgm(data.root, data.metadata_csv, data.modalities, data.use_bias_corrected,
                                           config.preprocess.max_voxels)
    elif data.layout == "egd":
        cohort = egd.discover_egd(data.root, data.modalities, config.preprocess.max_voxels)
    else:
        cohort = ingest.discover_csv(data.cases_csv, data.modalities, config.preprocess.max_voxels)
    work = WorkDir(config.work_dir)
    ingest.write_manifest(cohort.cases, work.manifest, data.modalities)
    ingest.write_quarantine(cohort.quarantined, work.quarantine)
    summary = summarise(cohort)
    log.info("%s", summary.table())
    if summary.included < data.min_patients:
        raise TooFewPatients(f"only {summary.included} usable patients, data.min_patients={data.min_patients}\n{summary.table()}")
    return summary


def summarise(cohort: ingest.Cohort) -> CohortSummary:
    labels = Counter(case.label for case in cohort.cases)
    return CohortSummary(len(cohort.cases), labels[1], labels[0], dict(Counter(reason_kind(r) for _, r in cohort.quarantined)))


def reason_kind(reason: str) -> str:
    """Group reasons for the summary table: drop the file-specific part of the message."""
    text = reason.split(": ", 1)[-1] if " line " in reason.split(": ", 1)[0] else reason
    for kind in ("follow-up scan", "unlabeled IDH", "unrecognised IDH", "contradictory IDH", "duplicate patient", "missing", "has no row",
                 "has no image folder", "not a 3-D", "unreadable", "differs from", "unsafe patient id", "ambiguous"):
        if kind in text:
            return kind
    return text[:60]


PHANTOM_SPEC_FILE = "phantom-spec.json"


def _phantom_marker(config: JobConfig) -> str:
    """What ``phantom-spec.json`` holds: the generator's version and the spec it drew from."""
    spec = json.loads(config.data.phantom.model_dump_json())
    return json.dumps({"generator": GENERATOR_VERSION, "spec": spec}, sort_keys=True)


def phantom_cohort_current(config: JobConfig) -> bool:
    """No phantom is configured, or ``data.root`` holds the one this generator draws from the spec
    (a cohort from an older generator or another spec is not: it lacks, say, ``oracle.csv``)."""
    if config.data.phantom is None:
        return True
    marker = config.data.root / PHANTOM_SPEC_FILE
    return marker.is_file() and marker.read_text() == _phantom_marker(config)


def ensure_phantom_cohort(config: JobConfig) -> None:
    """Generate the configured phantom cohort into ``data.root``, atomically, unless the folder
    already holds a cohort made from the same spec (a changed spec regenerates it) or a real
    UCSF-PDGM download (so ``--set data.root=...`` on the default job just works)."""
    spec, root = config.data.phantom, config.data.root
    if spec is None or phantom_cohort_current(config):
        return
    wanted = _phantom_marker(config)
    marker = root / PHANTOM_SPEC_FILE
    if _holds_real_data(root):
        log.info("%s holds a UCSF-PDGM dataset: using it instead of generating phantoms", root)
        return
    if root.is_dir() and not marker.is_file() and any(root.iterdir()):
        raise FileExistsError(f"{root}: data.phantom is set but this folder holds other data; "
                              "point data.root elsewhere or remove data.phantom")

    log.info("generating a phantom cohort of %d patients in %s", spec.patients, root)
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        generate_cohort(staging, spec.patients, seed=spec.seed, shape=tuple(spec.shape), crossover=spec.crossover,
                        mutant_fraction=spec.mutant_fraction)
        (staging / PHANTOM_SPEC_FILE).write_text(wanted)
        if root.exists():
            shutil.rmtree(root)
        staging.rename(root)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _sources(config: JobConfig) -> list[Path]:
    """The files the manifest is made from: the cases CSV, UCSF-PDGM's metadata CSV, or EGD's
    per-subject metadata files."""
    data = config.data
    if data.layout == "csv":
        return [data.cases_csv]
    if data.layout == "egd":
        return egd.metadata_files(data.root) if egd.subjects_dir(data.root).is_dir() else []
    if data.metadata_csv:
        return [data.metadata_csv]
    return sorted(data.root.glob(METADATA_GLOB)) if data.root.is_dir() else []


def outputs_verify(config: JobConfig) -> bool:
    """The manifest is newer than its sources, the quarantine list exists, and a phantom cohort is
    the current generator's (the code version that decides it)."""
    work, sources = WorkDir(config.work_dir), _sources(config)
    return (bool(sources) and all(p.is_file() for p in sources)
            and newer(work.manifest, *sources) and work.quarantine.is_file() and _phantom_or_real_data(config))


def cohort_outputs(config: JobConfig) -> list[Path]:
    work = WorkDir(config.work_dir)
    return [work.manifest, work.quarantine]


def _phantom_or_real_data(config: JobConfig) -> bool:
    """A configured phantom cohort is this generator's (else the stage regenerates it), unless
    ``data.root`` holds a real UCSF-PDGM download, which ``ensure_phantom_cohort`` leaves alone."""
    root = config.data.root
    return root is None or phantom_cohort_current(config) or _holds_real_data(root)


def _holds_real_data(root: Path) -> bool:
    """A UCSF-PDGM download rather than a phantom cohort: a metadata CSV and no phantom marker."""
    return not (root / PHANTOM_SPEC_FILE).is_file() and any(root.glob(METADATA_GLOB))


STEPS = (Step("cohort", "cohort", run_cohort, outputs_verify=outputs_verify, outputs=cohort_outputs,
              # the header cap: the step refuses files whose header claims more voxels
              reads=("data", "preprocess.max_voxels")),)
