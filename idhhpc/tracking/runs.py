"""The runs of a launch: one MLflow parent run per launch, one child run per stage task.

Each run is opened before the work it records and ended after it, so its duration is the
work's; it carries the job config, its distinguishing params (:mod:`.identity`), the source and
git tags (:mod:`.tags`) and, when it uses patients, the cohort datasets (:mod:`.datasets`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Mapping, Sequence
from typing import Iterator

from mlflow.tracking import MlflowClient

from idhhpc.config import JobConfig
from idhhpc.context import LaunchContext, current
from idhhpc.tracking.datasets import cohort_datasets
from idhhpc.tracking.flatten import flatten_params
from idhhpc.tracking.identity import run_params
from idhhpc.tracking.links import (
    compare_url,
    quiet_mlflow_links,
    run_url,
    runs_url,
    ui_base,
    ui_command,
)
from idhhpc.tracking.outage import use_short_http_settings
from idhhpc.tracking.tags import export_git_state, source_tags
from idhhpc.tracking.tracker import RunHandle, Tracker
from idhhpc.tracking.uris import default_tracking_uri
from idhhpc.workdir import WorkDir

log = logging.getLogger(__name__)


def tracking_uri(config: JobConfig) -> str:
    return config.tracking.uri or default_tracking_uri(config.work_dir)


def config_params(config: JobConfig) -> dict[str, str]:
    """The flattened job config (``train.max_lr``); what differs per launch is in the launch context."""
    return flatten_params(json.loads(config.model_dump_json()))


def tracker_for(config: JobConfig) -> Tracker:
    return Tracker(tracking_uri(config), config.tracking.experiment, WorkDir(config.work_dir).tracking_spool)


def open_launch_run(config: JobConfig, lock_token: str | None = None) -> LaunchContext:
    """Create the launch's parent run; return the launch context that carries its id to every job."""
    export_git_state()
    uri = tracking_uri(config)
    tracker = tracker_for(config)
    tags = source_tags("launch") | {"idhhpc.kind": "launch", "idhhpc.command": " ".join(["python", *sys.argv])}
    run = tracker.start_run(config.name, params=config_params(config) | run_params("launch"), tags=tags)
    tracker.flush()
    if run.run_id is None:
        log.warning("MLflow at %s is unreachable: stage runs will not be grouped under a launch run", uri)
    return LaunchContext(tracking_uri=uri, parent_run_id=run.run_id, lock_token=lock_token)


def close_launch_run(config: JobConfig, status: str, context: LaunchContext | None = None) -> None:
    """Mark the launch run ended once its jobs are; a tracking outage only costs a warning.

    A launch that did not finish (FAILED, KILLED) also ends its child runs still marked RUNNING:
    a job killed outright (SIGKILL, a node failure, Slurm's time limit) could not end its own.
    """
    context = context or current()
    run_id = context.parent_run_id
    if run_id is None:
        return
    use_short_http_settings()
    quiet_mlflow_links()
    try:
        client = MlflowClient(context.tracking_uri or tracking_uri(config))
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
def stage_run(config: JobConfig, name: str, role: str | None = None, fold: int | None = None,
              patients: Mapping[str, Sequence[str]] | None = None,
              tags: dict[str, str] | None = None) -> Iterator[RunHandle]:
    """A child run of the launch run, open for the ``with`` block: do the work inside it.

    ``role`` (default: ``name``) and ``fold`` become params; ``patients`` (``train``/``val``/
    ``test`` → ids) gives the ``split_hash`` param and the dataset inputs. Records wait in the
    work dir's spool while MLflow is down. It ends FINISHED, FAILED on an error, or KILLED when
    the job was stopped on request (its checkpoint is saved; the relaunch or requeue resumes it).
    """
    role = role or name
    tracker = tracker_for(config)
    params = config_params(config) | run_params(role, fold, **(patients or {}))
    run = tracker.start_run(name, parent_run_id=current().parent_run_id, params=params,
                            tags=source_tags(role) | {"idhhpc.stage": name, **(tags or {})})
    run.log_inputs(cohort_datasets(config, patients or {}))
    try:
        yield run
    except BaseException as error:
        run.end("KILLED" if _interrupted(error) else "FAILED")
        raise
    run.end("FINISHED")
    if not tracker.flush():
        log.warning("%d MLflow records of %s are still spooled in %s", tracker.pending(), name, tracker.journal.dir)


def launch_run(run: RunHandle, config: JobConfig) -> RunHandle | None:
    """The launch (parent) run, through the same tracker as ``run``: None outside a launch."""
    parent = current().parent_run_id
    return run.tracker.attach(parent) if parent else None


def describe_links(config: JobConfig, context: LaunchContext | None = None) -> list[str]:
    """What the launcher prints: the UI command (local store) and links that open the runs view."""
    uri = tracking_uri(config)
    lines = [f"MLflow:   {uri}"]
    command = ui_command(uri)
    if command:
        lines.append(f"  start the UI: {command}")
    try:
        lines += _ui_links(config, (context or current()).parent_run_id, MlflowClient(uri), ui_base(uri))
    except Exception as err:  # noqa: BLE001 - an unreachable server only loses the links
        log.warning("MLflow at %s did not answer, no links to print: %s", uri, err)
    return lines


def _ui_links(config: JobConfig, parent_run_id: str | None, client: MlflowClient, base: str) -> list[str]:
    experiment = client.get_experiment_by_name(config.tracking.experiment)
    if experiment is None:
        return []
    lines = [f"  runs:         {runs_url(base, experiment.experiment_id)}",
             f"  charts:       {runs_url(base, experiment.experiment_id, charts=True)}"]
    if parent_run_id:
        lines += _launch_links(client, base, experiment.experiment_id, parent_run_id)
    return lines


def _launch_links(client: MlflowClient, base: str, experiment_id: str, parent_run_id: str) -> list[str]:
    lines = [f"  this launch:  {run_url(base, experiment_id, parent_run_id)}"]
    children = client.search_runs([experiment_id], f"tags.mlflow.parentRunId = '{parent_run_id}'")
    folds = sorted((r for r in children if r.data.params.get("role") == "cv"), key=lambda r: r.info.run_name)
    if len(folds) > 1:
        lines.append(f"  compare folds: {compare_url(base, experiment_id, [r.info.run_id for r in folds])}")
    evaluation = next((r for r in children if r.data.params.get("role") == "evaluate"), None)
    if evaluation is not None:
        lines.append(f"  evaluation:   {run_url(base, experiment_id, evaluation.info.run_id, 'artifacts/report.html')}")
    return lines
