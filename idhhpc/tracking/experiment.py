"""The project's MLflow experiment: created with the metadata that says it holds model training.

MLflow 3 has two workflows, GenAI and model training. The experiment tag
``mlflow.experimentKind`` = ``custom_model_development`` is what the server-side metadata for
model training is, and the UI's source reads it, but the 3.17 UI bundle disables that reader
with a constant feature flag: its pages follow only the URL's ``workflowType`` (and the
sidebar switch remembered in the browser). The tag is set anyway, for builds that read it; the
links the project prints and documents carry ``workflowType=machine_learning``
(:mod:`idhhpc.tracking.links`), which is what really opens the runs view.
"""

from __future__ import annotations

import time

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import (
    MLFLOW_EXPERIMENT_PRIMARY_METRIC_GREATER_IS_BETTER,
    MLFLOW_EXPERIMENT_PRIMARY_METRIC_NAME,
)

from idhhpc.tracking.metrics import hidden_chart_metrics
from idhhpc.tracking.uris import local_artifact_location
from idhhpc.tracking.views import (
    SHARED_VIEW_TAG,
    same_view,
    shared_view_value,
    view_state,
)

EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING_KIND = "custom_model_development"
DESCRIPTION_TAG = "mlflow.note.content"
DESCRIPTION = (
    "IDH mutation status from MRI (idhhpc). Each **launch** is a parent run holding the launch's headline "
    "metrics (`test/auc`, `cv/oof_auc` or `cv/mean_auc`, ...) and figures; expand it for the stage runs: "
    "`fold-k` (param `role` cv, `fold` k), `fit`, `evaluate` (report.html, ROC, metrics table) and `explain` "
    "(gallery.html). Select two launches and press Compare."
)


def experiment_tags() -> dict[str, str]:
    """Tags every idhhpc experiment carries (the shared view's timestamps are those of now)."""
    return {EXPERIMENT_KIND_TAG: MODEL_TRAINING_KIND, DESCRIPTION_TAG: DESCRIPTION,
            MLFLOW_EXPERIMENT_PRIMARY_METRIC_NAME: "test/auc",
            MLFLOW_EXPERIMENT_PRIMARY_METRIC_GREATER_IS_BETTER: "true",
            SHARED_VIEW_TAG: shared_view_value(view_state(hidden_chart_metrics()), int(time.time() * 1000))}


def ensure_experiment(client: MlflowClient, name: str, tracking_uri: str) -> str:
    """The id of experiment ``name``, created with :func:`experiment_tags` (an experiment made by an
    older version, or by hand, gets the tags it lacks)."""
    found = client.get_experiment_by_name(name)
    if found is None:
        try:
            return client.create_experiment(name, artifact_location=local_artifact_location(tracking_uri),
                                            tags=experiment_tags())
        except MlflowException as error:
            if error.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            found = client.get_experiment_by_name(name)
    _update_tags(client, found.experiment_id, found.tags)
    return found.experiment_id


def _update_tags(client: MlflowClient, experiment_id: str, current: dict[str, str]) -> None:
    state = view_state(hidden_chart_metrics())
    for key, value in experiment_tags().items():
        unchanged = same_view(current.get(key), state) if key == SHARED_VIEW_TAG else current.get(key) == value
        if not unchanged:
            client.set_experiment_tag(experiment_id, key, value)
