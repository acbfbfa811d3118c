"""The runs of a launch: one MLflow parent run per launch, one child run per stage task."""

from __future__ import annotations

import contextlib
import json
import logging
from typing import Iterator

from mlflow.tracking import MlflowClient

from idhhpc.config import JobConfig
from idhhpc.tracking.flatten import flatten_params
from idhhpc.tracking.tracker import RunHandle, Tracker
from idhhpc.tracking.uris import default_tracking_uri
from idhhpc.workdir import WorkDir

log = logging.getLogger(__name__)


def tracking_uri(config: JobConfig) -> str:
    return config.tracking.uri or default_tracking_uri(config.work_dir)


def config_params(config: JobConfig) -> dict[str, str]:
    """The flattened job config (``train.max_lr``) minus bookkeeping that differs per launch."""
    raw = json.loads(config.model_dump_json())
    raw["tracking"].pop("parent_run_id", None)
    return flatten_params(raw)


def open_launch_run(config: JobConfig) -> JobConfig:
    """Create the launch's parent run; return the config that carries its id to every job."""
    uri = tracking_uri(config)
    tracker = Tracker(uri, config.tracking.experiment, WorkDir(config.work_dir).tracking_spool)
    run = tracker.start_run(config.name, params=config_params(config), tags={"idhhpc.kind": "launch"})
    tracker.flush()
    if run.run_id is None:
        log.warning("MLflow at %s is unreachable: stage runs will not be grouped under a launch run", uri)
    tracking = config.tracking.model_copy(update={"uri": uri, "parent_run_id": run.run_id})
    return config.model_copy(update={"tracking": tracking})


def close_launch_run(config: JobConfig, status: str) -> None:
    """Mark the launch run ended once its jobs are; a tracking outage only costs a warning."""
    run_id = config.tracking.parent_run_id
    if run_id is None:
        return
    try:
        MlflowClient(tracking_uri(config)).set_terminated(run_id, status)
    except Exception as err:  # noqa: BLE001 - the results are on disk; tracking must not fail the launch
        log.warning("could not mark MLflow run %s %s: %s", run_id, status, err)


@contextlib.contextmanager
def stage_run(config: JobConfig, name: str, tags: dict[str, str] | None = None) -> Iterator[RunHandle]:
    """A child run of the launch run; records wait in the work dir's spool if MLflow is down."""
    tracker = Tracker(tracking_uri(config), config.tracking.experiment, WorkDir(config.work_dir).tracking_spool)
    run = tracker.start_run(name, parent_run_id=config.tracking.parent_run_id, params=config_params(config),
                            tags={"idhhpc.stage": name, **(tags or {})})
    with run:
        yield run
    if not tracker.flush():
        log.warning("%d MLflow records of %s are still spooled in %s", tracker.pending(), name, tracker.journal.dir)
