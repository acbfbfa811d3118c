"""MLflow logging that keeps training going through tracking-server outages.

While the server answers, every call goes straight to MLflow. When a call fails because the
server is unreachable (refused, timeout, 5xx), the Tracker warns once and from then on appends
calls to a local journal (see ``journal.py``); later calls retry the server with exponential
backoff, and ``flush()`` / ``RunHandle.end()`` retry at once. Replay sends the journal in order,
so the server ends up with every record exactly once, as if there had been no outage.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Mapping, Sequence

from idhhpc.tracking.flatten import param_value
from idhhpc.tracking.journal import Journal, Operation
from idhhpc.tracking.links import quiet_mlflow_links
from idhhpc.tracking.outage import Backoff, is_outage, use_short_http_settings
from idhhpc.tracking.sender import OperationSender

logger = logging.getLogger(__name__)


class Tracker:
    """Creates runs in one experiment and logs to them, spooling to ``spool_dir`` when offline.

    Each Tracker writes its own session folder under ``spool_dir``, so many processes (Slurm
    array tasks, Ray trials) may share one ``spool_dir``.
    """

    def __init__(self, tracking_uri: str, experiment: str, spool_dir: Path) -> None:
        use_short_http_settings()
        quiet_mlflow_links()
        session = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.journal = Journal(Path(spool_dir) / session)
        self.sender = OperationSender(tracking_uri, experiment, self.journal.run_ids)
        self.backoff = Backoff()
        self._lock = threading.RLock()
        self._offline = False

    def start_run(
        self,
        name: str,
        parent_run_id: "str | RunHandle | None" = None,
        params: Mapping[str, Any] | None = None,
        tags: Mapping[str, Any] | None = None,
    ) -> "RunHandle":
        """Start a run; ``parent_run_id`` (an id from any process, or a handle) makes it a child."""
        handle = RunHandle(self, uuid.uuid4().hex)
        op: Operation = {"op": "create_run", "run": handle.key, "name": name, "time_ms": _now_ms()}
        op["tags"] = {k: str(v) for k, v in (tags or {}).items()}
        if isinstance(parent_run_id, RunHandle):
            op["parent_run_id"] = parent_run_id.known_run_id()
            op["parent_key"] = parent_run_id.key
        else:
            op["parent_run_id"] = parent_run_id
        self.submit(op)
        if params:
            handle.log_params(params)
        return handle

    def attach(self, run_id: str) -> "RunHandle":
        """A handle on an existing run (the launch run, from a stage job), to log to it; ending it
        is left to whoever opened it."""
        handle = RunHandle(self, f"attached-{run_id}")
        self.journal.remember_run(handle.key, run_id)
        return handle

    def submit(self, op: Operation) -> None:
        """Send ``op`` now if nothing is waiting and the server answers, else journal it."""
        with self._lock:
            if self._offline or self.journal.count_pending():
                self._journal(op)
                if self.backoff.ready():
                    self._replay()
                return
            try:
                self._send(op)
            except Exception as error:  # noqa: BLE001 - tracking must never stop training
                self._handle_live_failure(op, error)

    def flush(self) -> bool:
        """Replay the journal now, ignoring the backoff; True when nothing is left pending."""
        with self._lock:
            if self.journal.count_pending():
                self._replay()
            return self.journal.count_pending() == 0

    def pending(self) -> int:
        """Number of operations waiting for the server."""
        return self.journal.count_pending()

    def _send(self, op: Operation) -> None:
        if self.sender.send(op) is not None:
            self.journal.remember_run(op["run"], self.journal.run_ids[op["run"]])

    def _handle_live_failure(self, op: Operation, error: Exception) -> None:
        if is_outage(error):
            self._go_offline(error)
            self._journal(op)
        else:
            logger.error("MLflow rejected %s for run %s: %s", op["op"], op["run"], error)

    def _journal(self, op: Operation) -> None:
        if "local_path" in op and "spooled_path" not in op:
            try:
                op = {**op, "spooled_path": str(self.journal.spool_artifact(Path(op["local_path"])))}
            except OSError as error:
                logger.error("cannot spool artifact %s: %s", op["local_path"], error)
                return
        self.journal.append(op)

    def _replay(self) -> None:
        for op in self.journal.pending():
            try:
                self._send(op)
            except Exception as error:  # noqa: BLE001 - see _handle_live_failure
                if is_outage(error):
                    self._go_offline(error)
                    return
                logger.error("MLflow rejected journaled %s: %s", op["op"], error)
                self.journal.reject(op, str(error))
                continue
            self.journal.mark_done(op)
        self._go_online()

    def _go_offline(self, error: Exception) -> None:
        if not self._offline:
            logger.warning(
                "MLflow tracking server unreachable (%s); training goes on, logging to %s "
                "until it answers again", error, self.journal.dir,
            )
        self._offline = True
        self.backoff.failed()

    def _go_online(self) -> None:
        if self._offline:
            logger.warning("MLflow tracking server answers again; spooled records replayed")
        self._offline = False
        self.backoff.reset()


class RunHandle:
    """One MLflow run; every method returns quickly and never raises for tracking failures."""

    def __init__(self, tracker: Tracker, key: str) -> None:
        self.tracker = tracker
        self.key = key
        self._ended = False

    @property
    def run_id(self) -> str | None:
        """The MLflow run id; None while the run was created offline and not yet replayed."""
        if self.known_run_id() is None:
            self.tracker.flush()
        return self.known_run_id()

    def known_run_id(self) -> str | None:
        return self.tracker.journal.run_ids.get(self.key)

    def log_params(self, params: Mapping[str, Any]) -> None:
        values = {str(k): param_value(v) for k, v in params.items()}
        self._submit("log_params", params=values)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        self._submit("log_metrics", metrics={k: float(v) for k, v in metrics.items()}, step=step)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self._submit("set_tags", tags={str(k): str(v) for k, v in tags.items()})

    def log_artifact(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        """Log a file (or a folder's contents) under ``artifact_path``."""
        self._submit("log_artifact", local_path=str(Path(path).resolve()), artifact_path=artifact_path)

    def log_table(self, rows: Sequence[Mapping[str, Any]], artifact_file: str) -> None:
        """Rows (dicts with the same keys) as a table artifact at the run's root, the way
        ``mlflow.log_table`` stores one (pandas ``split`` JSON, listed in ``mlflow.loggedArtifacts``)."""
        columns = list(rows[0]) if rows else []
        table = {"columns": columns, "data": [[row.get(c) for c in columns] for row in rows]}
        with tempfile.TemporaryDirectory(prefix="idhhpc-table-") as folder:
            path = Path(folder) / artifact_file
            path.write_text(json.dumps(table, default=str), encoding="utf-8")
            self._submit("log_table", local_path=str(path), artifact_path=None, artifact_file=artifact_file)

    def log_image(self, path: str | os.PathLike, key: str, step: int = 0) -> None:
        """A PNG as a keyed image: the run's charts show it as an image card (one per ``key``)."""
        self._submit("log_image", local_path=str(Path(path).resolve()), key=key, step=step)

    def log_inputs(self, datasets: Sequence[Mapping[str, Any]]) -> None:
        """Dataset records of :func:`idhhpc.tracking.datasets.cohort_datasets`."""
        if datasets:
            self._submit("log_inputs", datasets=list(datasets))

    def end(self, status: str = "FINISHED") -> bool:
        """Mark the run ended and try to deliver everything; True when nothing is left pending."""
        if not self._ended:
            self._ended = True
            self._submit("end_run", status=status)
        return self.tracker.flush()

    def __enter__(self) -> "RunHandle":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.end("FAILED" if exc_type is not None else "FINISHED")

    def _submit(self, kind: str, **fields: Any) -> None:
        self.tracker.submit({"op": kind, "run": self.key, "time_ms": _now_ms(), **fields})


def _now_ms() -> int:
    return int(time.time() * 1000)
