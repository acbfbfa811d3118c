"""Where tracking data lives when no server is running: an SQLite file inside the job's work dir."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlparse

from idhhpc.constants import MLFLOW_ARTIFACT_DIR as ARTIFACT_DIR
from idhhpc.constants import MLFLOW_STORE_FILE as STORE_FILE


def default_tracking_uri(work_dir: Path) -> str:
    """``sqlite:///<work_dir>/mlflow.db``: a store that needs no server and survives the job."""
    work_dir = Path(work_dir).resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{work_dir / STORE_FILE}"


def local_store_path(tracking_uri: str) -> Path | None:
    """The file or folder behind a local (sqlite/file) tracking URI, else None."""
    parsed = urlparse(tracking_uri)
    if parsed.scheme == "sqlite":
        return Path(unquote(tracking_uri[len("sqlite:///"):]))
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if parsed.scheme == "" and tracking_uri:
        return Path(tracking_uri)
    return None


def local_artifact_location(tracking_uri: str) -> str | None:
    """Artifact root for experiments of a local store: ``mlartifacts/`` beside the store.

    Without it MLflow would put artifacts under ``./mlruns`` of whatever directory the job was
    started from. For a tracking server, None lets the server choose (``--artifacts-destination``).
    """
    store = local_store_path(tracking_uri)
    if store is None:
        return None
    return (store.resolve().parent / ARTIFACT_DIR).as_uri()
