"""MLflow runs of a sweep: one parent per sweep, one child per trial, named by stable keys.

A trial may run several times (retried from its checkpoint after a failure, or after the sweep
was resumed); a key derived from the sweep and the trial id makes every attempt log into the
same MLflow run, because the sender looks a run up by its key before creating one.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any, Mapping

from idhhpc.config import JobConfig
from idhhpc.context import current
from idhhpc.tracking import RunHandle, Tracker
from idhhpc.tracking.identity import run_params
from idhhpc.tracking.runs import config_params, tracker_for
from idhhpc.tracking.tags import source_tags
from idhhpc.workdir import WorkDir

BEST_TAG = "idhhpc.tune.best"
TRIAL_TAG = "idhhpc.tune.trial_id"


def sweep_key(config: JobConfig) -> str:
    """Stable for one work dir and experiment: a resumed sweep finds its parent run again."""
    text = f"{WorkDir(config.work_dir).root.resolve()}|{config.tracking.experiment}|{config.name}"
    return "sweep-" + hashlib.sha256(text.encode()).hexdigest()[:16]


def trial_key(sweep: str, trial_id: str) -> str:
    return f"{sweep}-{trial_id}"


def keyed_run(tracker: Tracker, key: str, name: str, parent_run_id: str | None = None,
              params: Mapping[str, Any] | None = None, tags: Mapping[str, Any] | None = None) -> RunHandle:
    """Open (or reopen) the run with ``key``; a ``role`` param (:func:`trial_params`, the sweep's
    params) also tags where its code came from."""
    role = (params or {}).get("role")
    tags = (source_tags(role) if role else {}) | dict(tags or {})
    tracker.submit({"op": "create_run", "run": key, "name": name, "parent_run_id": parent_run_id,
                    "tags": {k: str(v) for k, v in tags.items()}, "time_ms": _now_ms()})
    handle = RunHandle(tracker, key)
    if params:
        handle.log_params(params)
    return handle


def open_sweep_run(config: JobConfig) -> tuple[Tracker, RunHandle]:
    """The sweep's parent run, a child of the launch run when the launcher made one."""
    tracker = tracker_for(config)
    run = keyed_run(tracker, sweep_key(config), "tune", parent_run_id=current().parent_run_id,
                    params=config_params(config) | run_params("tune"),
                    tags={"idhhpc.stage": "tune", "idhhpc.kind": "sweep"})
    return tracker, run


def trial_params(trial_config: Mapping[str, Any]) -> dict[str, Any]:
    return {f"train.{name}": value for name, value in trial_config.items()} | run_params("trial")


def _now_ms() -> int:
    return int(time.time() * 1000)
