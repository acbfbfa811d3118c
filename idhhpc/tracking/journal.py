"""The local spool of tracking operations that could not reach the server yet.

One session folder per Tracker holds ``journal.jsonl`` (one operation per line, numbered),
``cursor.json`` (the number of the last operation the server has accepted), ``run_ids.json``
(local run key → MLflow run id) and ``artifacts/`` (copies of files logged while offline, so a
file overwritten later by training is still logged as it was). Replay resumes after the cursor,
so an operation is sent once even if the process dies between two replays.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Iterator

from idhhpc.atomic import atomic_write_json

Operation = dict[str, Any]


class Journal:
    """Append-only operation log with a persisted replay cursor and run-id map."""

    def __init__(self, session_dir: Path) -> None:
        self.dir = Path(session_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / "journal.jsonl"
        self._cursor_path = self.dir / "cursor.json"
        self._run_ids_path = self.dir / "run_ids.json"
        self.cursor = self._read_json(self._cursor_path, {"done": 0})["done"]
        self.run_ids: dict[str, str] = self._read_json(self._run_ids_path, {})
        self._last_seq = max([self.cursor] + [op["seq"] for op in self._read_all()])
        self._end_torn_line()

    def append(self, op: Operation) -> None:
        self._last_seq += 1
        op = {**op, "seq": self._last_seq}
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(op, default=str) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def pending(self) -> list[Operation]:
        return [op for op in self._read_all() if op["seq"] > self.cursor]

    def count_pending(self) -> int:
        return self._last_seq - self.cursor

    def mark_done(self, op: Operation) -> None:
        """Advance the cursor past ``op``; truncate the log once everything is replayed."""
        self.cursor = op["seq"]
        atomic_write_json(self._cursor_path, {"done": self.cursor})
        spooled = op.get("spooled_path")
        if spooled:
            shutil.rmtree(Path(spooled).parent, ignore_errors=True)
        if self.cursor == self._last_seq:
            self.path.unlink(missing_ok=True)

    def remember_run(self, key: str, run_id: str) -> None:
        self.run_ids[key] = run_id
        atomic_write_json(self._run_ids_path, self.run_ids)

    def spool_artifact(self, local_path: Path) -> Path:
        """Copy a file or folder into the spool so replay logs it as it was at call time."""
        target = self.dir / "artifacts" / f"{self._last_seq + 1:08d}" / Path(local_path).name
        target.parent.mkdir(parents=True, exist_ok=True)
        if Path(local_path).is_dir():
            shutil.copytree(local_path, target)
        else:
            shutil.copy2(local_path, target)
        return target

    def reject(self, op: Operation, reason: str) -> None:
        """Keep an operation the server refused, for a human to look at, and move past it."""
        with open(self.dir / "rejected.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps({**op, "reason": reason}, default=str) + "\n")
        self.mark_done(op)

    def _end_torn_line(self) -> None:
        if self.path.exists() and not self.path.read_bytes().endswith(b"\n"):
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write("\n")

    def _read_all(self) -> Iterator[Operation]:
        if not self.path.exists():
            return iter(())
        lines = self.path.read_text(encoding="utf-8").splitlines()
        return iter([op for op in map(_decode, lines) if op is not None])

    @staticmethod
    def _read_json(path: Path, default: Any) -> Any:
        return json.loads(path.read_text(encoding="utf-8")) if path.exists() else default


def _decode(line: str) -> Operation | None:
    """One journal line; None for a blank or torn line (a crash mid-append writes no full op)."""
    try:
        return json.loads(line) if line.strip() else None
    except json.JSONDecodeError:
        return None
