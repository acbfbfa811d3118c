"""Sends journal operations to MLflow through ``MlflowClient`` (explicit run ids, no global state).

Every operation is safe to send twice: runs carry an ``idhhpc.run_key`` tag that is looked up
before creating one, metrics keep the timestamp of the original call (the SQL store drops an
identical metric row), params are sent only when the run lacks them, tags are rewritten,
artifacts and tables overwrite, dataset inputs are linked once. A keyed image sent twice is
stored twice (MLflow names each upload uniquely); the image card shows the latest.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Callable

from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import (
    MLFLOW_DATASET_CONTEXT,
    MLFLOW_LOGGED_ARTIFACTS,
    MLFLOW_PARENT_RUN_ID,
    MLFLOW_RUN_NAME,
)

from idhhpc.tracking.experiment import ensure_experiment
from idhhpc.tracking.journal import Operation

logger = logging.getLogger(__name__)

RUN_KEY_TAG = "idhhpc.run_key"
_BATCH = 100


class UnknownRunKey(KeyError):
    """An operation names a run whose creation was rejected, so it can never be sent."""


class OperationSender:
    def __init__(self, tracking_uri: str, experiment: str, run_ids: dict[str, str]) -> None:
        self.client = MlflowClient(tracking_uri=tracking_uri)
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.run_ids = run_ids
        self._experiment_id: str | None = None
        self._handlers: dict[str, Callable[[Operation], None]] = {
            "create_run": self._create_run,
            "log_params": self._log_params,
            "log_metrics": self._log_metrics,
            "set_tags": self._set_tags,
            "log_artifact": self._log_artifact,
            "log_table": self._log_table,
            "log_image": self._log_image,
            "log_inputs": self._log_inputs,
            "end_run": self._end_run,
        }

    def send(self, op: Operation) -> str | None:
        """Send one operation; return the run id when it created a run."""
        self._handlers[op["op"]](op)
        return self.run_ids.get(op["run"]) if op["op"] == "create_run" else None

    def run_id(self, key: str) -> str:
        try:
            return self.run_ids[key]
        except KeyError:
            raise UnknownRunKey(f"run key {key!r} has no MLflow run id (its creation failed)") from None

    def experiment_id(self) -> str:
        if self._experiment_id is None:
            self._experiment_id = ensure_experiment(self.client, self.experiment, self.tracking_uri)
        return self._experiment_id

    def _create_run(self, op: Operation) -> None:
        key = op["run"]
        if key in self.run_ids:
            return
        run_id = self._find_run(key) or self._new_run(op)
        self.run_ids[key] = run_id

    def _find_run(self, key: str) -> str | None:
        runs = self.client.search_runs(
            [self.experiment_id()], filter_string=f"tags.`{RUN_KEY_TAG}` = '{key}'", max_results=1
        )
        return runs[0].info.run_id if runs else None

    def _new_run(self, op: Operation) -> str:
        tags = {**op.get("tags", {}), RUN_KEY_TAG: op["run"], MLFLOW_RUN_NAME: op["name"]}
        parent = op.get("parent_run_id") or (
            self.run_id(op["parent_key"]) if op.get("parent_key") else None
        )
        if parent:
            tags[MLFLOW_PARENT_RUN_ID] = parent
        run = self.client.create_run(
            self.experiment_id(), start_time=op["time_ms"], tags=tags, run_name=op["name"]
        )
        return run.info.run_id

    def _log_params(self, op: Operation) -> None:
        """Params the run does not have yet. A run reopened by its key (a resumed sweep) already
        holds its first launch's values, and MLflow rejects the whole batch if one of them changed
        (``hpc.executor`` when the relaunch uses another executor): those keep their first value."""
        run_id = self.run_id(op["run"])
        logged = self.client.get_run(run_id).data.params
        changed = sorted(k for k, v in op["params"].items() if k in logged and logged[k] != v)
        if changed:
            logger.info("run %s keeps the first values of %s (MLflow params cannot change)", op["run"],
                        ", ".join(changed))
        params = [Param(k, v) for k, v in op["params"].items() if k not in logged]
        for start in range(0, len(params), _BATCH):
            self.client.log_batch(run_id, params=params[start : start + _BATCH])

    def _log_metrics(self, op: Operation) -> None:
        metrics = [
            Metric(k, float(v), op["time_ms"], op.get("step") or 0) for k, v in op["metrics"].items()
        ]
        for start in range(0, len(metrics), _BATCH):
            self.client.log_batch(self.run_id(op["run"]), metrics=metrics[start : start + _BATCH])

    def _set_tags(self, op: Operation) -> None:
        tags = [RunTag(k, str(v)) for k, v in op["tags"].items()]
        for start in range(0, len(tags), _BATCH):
            self.client.log_batch(self.run_id(op["run"]), tags=tags[start : start + _BATCH])

    def _log_artifact(self, op: Operation) -> None:
        path = Path(op.get("spooled_path") or op["local_path"])
        log: Any = self.client.log_artifacts if path.is_dir() else self.client.log_artifact
        log(self.run_id(op["run"]), str(path), op.get("artifact_path"))

    def _log_table(self, op: Operation) -> None:
        """A JSON table (pandas ``split`` orient) as ``mlflow.log_table`` stores it, without its
        append-to-existing behaviour: sending it twice leaves one table."""
        self._log_artifact(op)
        run_id = self.run_id(op["run"])
        listed = json.loads(self.client.get_run(run_id).data.tags.get(MLFLOW_LOGGED_ARTIFACTS, "[]"))
        entry = {"path": op["artifact_file"], "type": "table"}
        if entry not in listed:
            self.client.set_tag(run_id, MLFLOW_LOGGED_ARTIFACTS, json.dumps([*listed, entry]))

    def _log_image(self, op: Operation) -> None:
        from PIL import Image

        with Image.open(op.get("spooled_path") or op["local_path"]) as image:
            image.load()
            self.client.log_image(self.run_id(op["run"]), image, key=op["key"], step=op.get("step") or 0,
                                  timestamp=op["time_ms"])

    def _log_inputs(self, op: Operation) -> None:
        inputs = [DatasetInput(Dataset(**entry["dataset"]), [InputTag(MLFLOW_DATASET_CONTEXT, entry["context"])])
                  for entry in op["datasets"]]
        self.client.log_inputs(self.run_id(op["run"]), datasets=inputs)

    def _end_run(self, op: Operation) -> None:
        self.client.set_terminated(self.run_id(op["run"]), op["status"], op["time_ms"])
