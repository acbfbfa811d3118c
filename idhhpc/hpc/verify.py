"""Which steps of a launch already have valid outputs and can be skipped.

Conservative on purpose: a step is skipped only when its outputs exist, are newer than their
inputs, and provably belong to the current configuration (checksums, a recomputed split, the
trainer's config hash, or unchanged config sections against the previous launch's resolved
``config.yaml``). When unsure the step reruns; every stage is idempotent and resumes. Once one
step reruns, every later step reruns too, because its inputs are about to change.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Callable

import yaml

from idhhpc.config import JobConfig
from idhhpc.hpc.pipeline import Step
from idhhpc.workdir import WorkDir

log = logging.getLogger(__name__)

Check = Callable[[JobConfig, JobConfig | None], bool]


def previous_config(config: JobConfig) -> JobConfig | None:
    """The resolved config of the last launch in this work dir, or None if absent or unreadable."""
    path = WorkDir(config.work_dir).resolved_config
    try:
        return JobConfig(**yaml.safe_load(path.read_text()))
    except Exception:  # a missing, old-format or hand-edited file: nothing is known to match
        return None


def outputs_verify(step: str, config: JobConfig, previous: JobConfig | None = None) -> bool:
    """True when the outputs of ``step`` (a step name such as ``preprocess-merge`` or ``cv``) are
    complete and valid for ``config``; ``previous`` is the config the outputs were made with."""
    check = _CHECKS.get(step)
    if check is None:
        return False
    try:
        return check(config, previous)
    except Exception as err:  # an unreadable output is an output to rebuild
        log.info("outputs of %s do not verify: %s: %s", step, type(err).__name__, err)
        return False


def plan_skips(steps: list[Step], config: JobConfig, previous: JobConfig | None = None) -> set[str]:
    """Names of the leading steps whose outputs verify; stops at the first that must rerun."""
    skipped: set[str] = set()
    for step in steps:
        if not outputs_verify(step.name, config, previous):
            break
        skipped.add(step.name)
    return skipped


def _same_sections(config: JobConfig, previous: JobConfig | None, *sections: str) -> bool:
    return previous is not None and previous.section_hash(*sections) == config.section_hash(*sections)


def _newer(output: Path, *inputs: Path) -> bool:
    """``output`` exists and was written no earlier than every existing input."""
    if not output.is_file():
        return False
    mtime = output.stat().st_mtime
    return all(mtime >= p.stat().st_mtime for p in inputs if p.exists())


def _cohort_sources(config: JobConfig) -> list[Path]:
    data = config.data
    if data.layout == "csv":
        return [data.cases_csv]
    root = data.root
    return [data.metadata_csv] if data.metadata_csv else sorted(root.glob("UCSF-PDGM-metadata*.csv")) if root.is_dir() else []


def _cohort(config: JobConfig, previous: JobConfig | None) -> bool:
    work, sources = WorkDir(config.work_dir), _cohort_sources(config)
    return (bool(sources) and all(p.is_file() for p in sources) and _same_sections(config, previous, "data")
            and _newer(work.manifest, *sources) and work.quarantine.is_file())


def _preprocess(config: JobConfig, previous: JobConfig | None) -> bool:
    from idhhpc.data.dataset import verify_shards
    from idhhpc.data.preprocess import settings_hash
    from idhhpc.stages.preprocess import preprocess_settings, shard_plan

    work = WorkDir(config.work_dir)
    if not _newer(work.index, work.manifest) or not _same_sections(config, previous, "data", "preprocess"):
        return False
    index = json.loads(work.index.read_text())
    expected = settings_hash(preprocess_settings(config), list(config.data.modalities))
    if index.get("settings_hash") != expected or len(index["shards"]) != len(shard_plan(config)):
        return False
    verify_shards(work.index, index)
    return True


def _split(config: JobConfig, previous: JobConfig | None) -> bool:
    from idhhpc.stages.split import make_splits

    work = WorkDir(config.work_dir)
    if not _newer(work.splits, work.index):
        return False
    patients = json.loads(work.index.read_text())["patients"]
    ids = sorted(patients)
    s = config.split
    expected = make_splits(ids, [int(patients[p]["label"]) for p in ids], s.test_fraction, s.val_fraction, s.folds,
                           config.seed)
    return json.loads(work.splits.read_text()) == json.loads(json.dumps(expected))


def _tune(config: JobConfig, previous: JobConfig | None) -> bool:
    work = WorkDir(config.work_dir)
    return _newer(work.best_config, work.splits) and _same_sections(
        config, previous, "data", "preprocess", "split", "model", "train", "tune")


def _trained(config: JobConfig, previous: JobConfig | None, run_name: str) -> bool:
    """selection.json and model.pt written after the split, by a finished run of this very config."""
    import torch

    from idhhpc.stages.train import MODEL_FILE, SELECTION_FILE, with_best_config
    from idhhpc.train.checkpoint import LAST_NAME

    work = WorkDir(config.work_dir)
    run_dir = work.checkpoints(run_name)
    inputs = [work.splits, work.index, work.best_config]
    if not (_newer(run_dir / SELECTION_FILE, *inputs) and _newer(run_dir / MODEL_FILE, *inputs)):
        return False
    if not _same_sections(config, previous, "data"):
        return False
    last = torch.load(run_dir / LAST_NAME, map_location="cpu", weights_only=True, mmap=True)
    expected_hash = with_best_config(config).section_hash("preprocess", "split", "model", "train")
    return last.get("config_hash") == expected_hash and bool(last["progress"]["finished"])


def _cv(config: JobConfig, previous: JobConfig | None) -> bool:
    return all(_trained(config, previous, f"fold-{fold}") for fold in range(config.split.folds))


def _fit(config: JobConfig, previous: JobConfig | None) -> bool:
    return _trained(config, previous, "fit")


def _evaluate(config: JobConfig, previous: JobConfig | None) -> bool:
    from idhhpc.stages.train import MODEL_FILE

    work = WorkDir(config.work_dir)
    model = work.checkpoints("fit") / MODEL_FILE
    return (_newer(work.reports / "report.md", model) and _newer(work.reports / "predictions.csv", model)
            and _same_sections(config, previous, "data", "evaluate"))


def _explain(config: JobConfig, previous: JobConfig | None) -> bool:
    from idhhpc.stages.train import MODEL_FILE

    work = WorkDir(config.work_dir)
    model = work.checkpoints("fit") / MODEL_FILE
    return (_newer(work.explanations / "gallery.md", model, work.reports / "predictions.csv")
            and _same_sections(config, previous, "data", "explain"))


_CHECKS: dict[str, Check] = {
    "cohort": _cohort,
    "preprocess": _preprocess,
    "preprocess-merge": _preprocess,
    "split": _split,
    "tune": _tune,
    "cv": _cv,
    "fit": _fit,
    "evaluate": _evaluate,
    "explain": _explain,
}
