"""What the stages' integrity checks and declarations share: output ages, finished runs, and
the config keys a training run reads.

Checks are conservative on purpose: an output counts only when it exists, is newer than its
inputs and is complete; when unsure the step reruns (every stage is idempotent and resumes).
Whether an output belongs to the current configuration is the runner's question, answered by
the step's stamp (:mod:`idhhpc.hpc.stamps`), except for a run's own checkpoint identity, which
the trainer compares (:func:`idhhpc.train.fitting.checkpoint_of`).
"""

from __future__ import annotations

from pathlib import Path

from idhhpc.config import JobConfig
from idhhpc.train import fitting
from idhhpc.train.prefix_cache import cache_sections
from idhhpc.workdir import WorkDir


def newer(output: Path, *inputs: Path) -> bool:
    """``output`` exists and was written no earlier than every existing input."""
    if not output.is_file():
        return False
    mtime = output.stat().st_mtime
    return all(mtime >= p.stat().st_mtime for p in inputs if p.exists())


def trained_sections(config: JobConfig) -> tuple[str, ...]:
    """The sections a network trains with: the feature cache only when it applies, so a job that
    never uses it keeps its runs whatever ``cache`` says."""
    return ("model", *cache_sections(config), "train")


def training_reads(config: JobConfig) -> tuple[str, ...]:
    """The keys a cv fold or the fit reads: its training, then the calibration and threshold rule
    chosen on the run's validation patients when it ends."""
    return (*trained_sections(config), "evaluate.calibration", "evaluate.threshold")


TRAINING_NEEDS = ("split", "features")
"""The steps a training run reads: the splits, and the feature cache (itself after the shards)."""
TRAINING_CONSUMES = ("tune",)
"""The tuned values, read by content: a job without the tune stage keeps its runs whatever
``tune`` says."""


def training_finished(config: JobConfig, run_name: str, split: dict[str, list[str]]) -> bool:
    """``selection.json`` and ``model.pt`` written after the split, the index and the tuned values
    by a finished run of this configuration on ``split["train"]``/``split["val"]``."""
    work = WorkDir(config.work_dir)
    inputs = [work.splits, work.index, work.best_config]
    if not (newer(work.selection(run_name), *inputs) and newer(work.exported_model(run_name), *inputs)):
        return False
    return fitting.run_finished(config, run_name, split["train"], split["val"])
