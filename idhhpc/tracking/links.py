"""Links into the MLflow UI that open the model-training views, and the command that serves it.

MLflow 3.17's UI shows an experiment in the GenAI workflow (an empty "Overview" page) unless
the URL says ``workflowType=machine_learning`` or this browser once chose "Model training" in
the sidebar; the experiment's own metadata does not decide it (see :mod:`.experiment`). So
every link the project prints or documents is built here, inside the hash route, with that
query, and the runs-page link also applies the pinned view (:mod:`.views`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from urllib.parse import quote

from idhhpc.tracking.uris import local_store_path
from idhhpc.tracking.views import VIEW_KEY

WORKFLOW_QUERY = "workflowType=machine_learning"
DEFAULT_UI_PORT = 5000
HOST = "127.0.0.1"


def ui_base(tracking_uri: str, port: int = DEFAULT_UI_PORT) -> str:
    """The UI's address: the tracking server itself, or the ``mlflow ui`` of a local store."""
    if tracking_uri.startswith(("http://", "https://")):
        return tracking_uri.rstrip("/")
    return f"http://{HOST}:{port}"


def ui_command(tracking_uri: str, port: int = DEFAULT_UI_PORT) -> str | None:
    """``mlflow ui ...`` for a local store (None for a server, which serves its own UI)."""
    if local_store_path(tracking_uri) is None:
        return None
    return f"mlflow ui --backend-store-uri {tracking_uri} --host {HOST} --port {port}"


def runs_url(base: str, experiment_id: str, charts: bool = False) -> str:
    """The experiment's runs table (``charts``: its chart view), with the pinned columns and charts."""
    mode = "&compareRunsMode=CHART" if charts else ""
    return f"{base}/#/experiments/{experiment_id}/runs?{WORKFLOW_QUERY}&viewStateShareKey={VIEW_KEY}{mode}"


def run_url(base: str, experiment_id: str, run_id: str, tab: str = "") -> str:
    """One run's page; ``tab`` is ``artifacts``, ``model-metrics`` ... (empty: overview)."""
    suffix = f"/{tab}" if tab else ""
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}{suffix}?{WORKFLOW_QUERY}"


def compare_url(base: str, experiment_id: str, run_ids: Sequence[str]) -> str:
    """The Compare page of ``run_ids``: params (differences highlighted), metrics, common artifacts."""
    runs, experiments = quote(json.dumps(list(run_ids))), quote(json.dumps([experiment_id]))
    return f"{base}/#/compare-runs?runs={runs}&experiments={experiments}&{WORKFLOW_QUERY}"


def quiet_mlflow_links() -> None:
    """Stop MLflow printing its own "View run" links (they lack the workflow query and open
    the GenAI view); the launcher prints the project's links instead."""
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
