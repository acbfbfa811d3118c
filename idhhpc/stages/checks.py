"""What the stages' output checks share: freshness, unchanged config sections, finished runs.

Checks are conservative on purpose: an output counts only when it exists, is newer than its
inputs and provably belongs to the current configuration; when unsure the step reruns (every
stage is idempotent and resumes).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from idhhpc.config import JobConfig
from idhhpc.train.fitting import run_identity
from idhhpc.train.takeoff import attempt_identity, read_attempts
from idhhpc.tuned import apply_tuned
from idhhpc.workdir import WorkDir


def newer(output: Path, *inputs: Path) -> bool:
    """``output`` exists and was written no earlier than every existing input."""
    if not output.is_file():
        return False
    mtime = output.stat().st_mtime
    return all(mtime >= p.stat().st_mtime for p in inputs if p.exists())


def same_sections(config: JobConfig, previous: JobConfig | None, *sections: str) -> bool:
    """``sections`` (and the seed) are as in the launch that wrote the outputs."""
    return previous is not None and previous.section_hash(*sections) == config.section_hash(*sections)


def training_finished(config: JobConfig, previous: JobConfig | None, run_name: str, split: dict[str, list[str]]) -> bool:
    """``selection.json`` and ``model.pt`` written after the split by a finished run of this very
    configuration (tuned values included) on these data and ``split["train"]``/``split["val"]``,
    calibrated and thresholded as the job now asks."""
    work = WorkDir(config.work_dir)
    inputs = [work.splits, work.index, work.best_config]
    if not (newer(work.selection(run_name), *inputs) and newer(work.exported_model(run_name), *inputs)):
        return False
    if not same_sections(config, previous, "data"):
        return False
    selection = json.loads(work.selection(run_name).read_text())
    if (selection.get("calibration"), selection.get("threshold_method")) != (
            config.evaluate.calibration, config.evaluate.threshold):
        return False  # rerunning only recomputes them: the finished training resumes at its end
    last = torch.load(work.last_checkpoint(run_name), map_location="cpu", weights_only=True, mmap=True)
    attempt = len(read_attempts(work.checkpoints(run_name)))  # the take-off rule's restarts, if any
    identity = attempt_identity(run_identity(apply_tuned(config), split["train"], split["val"]), attempt)
    return last.get("config_hash") == identity and bool(last["progress"]["finished"])
