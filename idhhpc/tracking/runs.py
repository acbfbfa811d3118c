"""The runs of a launch: one MLflow parent run per launch, one child run per stage task."""

from __future__ import annotations

import contextlib
import json
import logging
from typing import Iterator

from mlflow.tracking import MlflowClient

from idhhpc.config import JobConfig
from idhhpc.tracking.flatten import flatten_params
from idhhpc.tracking.outage import use_short_http_settings
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
    """Mark the launch run ended once its jobs are; a tracking outage only costs a warning.

    A launch that did not finish (FAILED, KILLED) also ends its child runs still marked RUNNING:
    a job killed outright (SIGKILL, a node failure, Slurm's time limit) could not end its own.
    """
    run_id = config.tracking.parent_run_id
    if run_id is None:
        return
    use_short_http_settings()
    try:
        client = MlflowClient(tracking_uri(config))
        if status != "FINISHED":
            for child in _running_children(client, run_id):
                client.set_terminated(child, status)
        client.set_terminated(run_id, status)
    except Exception as err:  # noqa: BLE001 - the results are on disk; tracking must not fail the launch
        log.warning("could not mark MLflow run %s %s: %s", run_id, status, err)


def _running_children(client: MlflowClient, run_id: str) -> list[str]:
    experiment = client.get_run(run_id).info.experiment_id
    runs = client.search_runs([experiment], filter_string=f"tags.mlflow.parentRunId = '{run_id}' "
                                                          "and attributes.status = 'RUNNING'")
    return [run.info.run_id for run in runs]


def _interrupted(error: BaseException) -> bool:
    """A stop on request (Ctrl-C, SIGTERM, preemption) rather than a failure. The trainer's
    ``TrainingInterrupted`` is recognised by name: importing it would make tracking depend on train."""
    names = {cls.__name__ for cls in type(error).__mro__}
    return isinstance(error, (KeyboardInterrupt, SystemExit)) or bool(names & {"TrainingInterrupted",
                                                                             "StageInterrupted"})


@contextlib.contextmanager
def stage_run(config: JobConfig, name: str, tags: dict[str, str] | None = None) -> Iterator[RunHandle]:
    """A child run of the launch run; records wait in the work dir's spool if MLflow is down.

    It ends FINISHED, FAILED on an error, or KILLED when the job was stopped on request (its
    checkpoint is saved, and the relaunch or requeue starts a new run that resumes it).
    """
    tracker = Tracker(tracking_uri(config), config.tracking.experiment, WorkDir(config.work_dir).tracking_spool)
    run = tracker.start_run(name, parent_run_id=config.tracking.parent_run_id, params=config_params(config),
                            tags={"idhhpc.stage": name, **(tags or {})})
    try:
        yield run
    except BaseException as error:
        run.end("KILLED" if _interrupted(error) else "FAILED")
        raise
    run.end("FINISHED")
    if not tracker.flush():
        log.warning("%d MLflow records of %s are still spooled in %s", tracker.pending(), name, tracker.journal.dir)
