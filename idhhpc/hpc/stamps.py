"""Content stamps: what a step's outputs were made from, recorded by the job that made them.

A step's stamp is the fingerprint of the seed, the config keys it declares (``Step.reads``), the
stamps of the steps it needs and the output checksums of the steps it consumes. The job records
its stamp, with the checksums of the step's declared outputs, in ``stamps/<step>/<task>.json``
when it succeeds (in :class:`~idhhpc.hpc.jobcall.StageCall`, so a Slurm chain records its own,
with no launcher waiting). A relaunch skips a step when every task's record holds the stamp
computed now and the outputs still have the recorded checksums (:func:`recorded`), so a changed
key reruns exactly the steps that declare it and their dependents.

Stamps are computed from the config, not read from upstream records: a step's stamp is what its
inputs should be, whatever happened to run before it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from idhhpc.atomic import atomic_write_json, sha256_file
from idhhpc.config import JobConfig, fingerprint, jsonable
from idhhpc.hpc.pipeline import find_step
from idhhpc.stages.step import Step
from idhhpc.workdir import WorkDir

log = logging.getLogger(__name__)


def key_value(config: JobConfig, key: str) -> Any:
    """The JSON value of a section (``"evaluate"``) or of one key in it (``"evaluate.ensemble"``)."""
    value: Any = config
    for part in key.split("."):
        value = getattr(value, part)
    return jsonable(value) if isinstance(value, BaseModel) else json.loads(json.dumps(value, default=str))


def step_stamp(step: Step, config: JobConfig) -> str:
    """The fingerprint of everything ``step`` declares it reads, for ``config``."""
    return fingerprint({
        "seed": config.seed,
        "reads": {key: key_value(config, key) for key in step.read_keys(config)},
        "needs": {name: step_stamp(find_step(name), config) for name in step.needs},
        "consumes": {name: output_checksums(find_step(name), config) for name in step.consumes},
    })


def output_checksums(step: Step, config: JobConfig) -> dict[str, str | None]:
    """sha256 of each declared output (None for a missing one), by its path in the work dir."""
    work = WorkDir(config.work_dir)
    return {str(path.relative_to(work.root)): sha256_file(path) if path.is_file() else None
            for path in step.outputs(config)}


def record_path(step: Step, config: JobConfig, task: tuple) -> Path:
    """One file per task, so the tasks of an array job never write the same file."""
    return WorkDir(config.work_dir).stamps / step.name / f"{fingerprint(list(task))}.json"


def record(step: Step | str, config: JobConfig, task: tuple) -> None:
    """Note that ``step``'s job for ``task`` succeeded with ``config``."""
    step = find_step(step) if isinstance(step, str) else step
    atomic_write_json(record_path(step, config, task), {
        "step": step.name, "task": list(task), "stamp": step_stamp(step, config),
        "outputs": output_checksums(step, config)})


def recorded(step: Step, config: JobConfig) -> bool:
    """Every task of ``step`` has a record with the stamp of ``config`` and outputs unchanged since."""
    stamp, outputs = step_stamp(step, config), output_checksums(step, config)
    for task in step.tasks(config):
        path = record_path(step, config, task)
        if not path.is_file():
            return False
        written = json.loads(path.read_text())
        if written.get("stamp") != stamp:
            log.info("%s: stamp %s differs from the recorded %s", step.name, stamp, written.get("stamp"))
            return False
        if written.get("outputs") != outputs:
            log.info("%s: outputs changed since its job recorded them", step.name)
            return False
    return True
