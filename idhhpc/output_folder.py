"""``predict --out DIR``: a folder replaced as a whole, and only when that deletes nothing of anyone's.

``predict`` writes its outputs into a hidden sibling and renames it onto ``DIR`` so they appear
all at once; whatever ``DIR`` held is removed. So ``DIR`` is replaced only when it is missing,
empty, or an earlier prediction (its ``prediction.json`` and exactly the files that lists);
anything else (a thesis and notes, another program's outputs, a file) is refused before any
work, unless ``--force`` says to replace it. Never replaced, even with ``--force``: the current
directory or a folder above it (``--out .``), and a folder holding the patient's files or the
model.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from idhhpc.constants import PREDICTION_FILE


class OutputRefused(ValueError):
    """An output folder that replacing would delete something ``predict`` did not write."""


def replaceable_output(out: Path, inputs: list[Path], force: bool) -> Path:
    """``out`` made absolute, if writing a prediction there deletes nothing it must not."""
    target = Path(os.path.abspath(out))
    resolved = target.resolve()
    cwd = Path.cwd().resolve()
    if cwd.is_relative_to(resolved):
        raise OutputRefused(f"--out {out}: the output folder is replaced as a whole, so it cannot be the current "
                            "directory or one above it; name a new folder, e.g. --out ./prediction")
    for item in inputs:
        if Path(item).resolve().is_relative_to(resolved):
            raise OutputRefused(f"--out {out}: holds {item}, an input of this prediction; name another folder")
    problem = _not_ours(target)
    if problem and not force:
        raise OutputRefused(f"--out {out}: {problem}; replacing it would delete that. Name another folder, "
                            "or add --force to replace it")
    return target


def _not_ours(target: Path) -> str | None:
    """Why replacing ``target`` would delete what no prediction wrote (None when nothing would)."""
    if not os.path.lexists(target):
        return None
    if target.is_symlink() or not target.is_dir():
        return "is a file or a link, not a folder"
    present = {p.relative_to(target).as_posix() for p in target.rglob("*") if not p.is_dir()}
    if not present and not any(target.iterdir()):
        return None
    written = _written_by_prediction(target)
    if written is None:
        return f"holds files that are not an idhhpc prediction (no readable {PREDICTION_FILE})"
    others = sorted(present - written) + sorted(p.name for p in target.iterdir() if p.is_dir())
    return f"holds files an earlier prediction did not write ({', '.join(others[:5])})" if others else None


def _written_by_prediction(folder: Path) -> set[str] | None:
    """The files an earlier prediction in ``folder`` wrote, by its ``prediction.json``."""
    try:
        record = json.loads((folder / PREDICTION_FILE).read_text())
        files = {name for cam in record["explanation"]["cams"] for name in cam["files"].values()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    if not isinstance(record.get("prob_mutant"), (int, float, type(None))):
        return None
    return {PREDICTION_FILE, *map(str, files)}


def replace_folder(built: Path, out: Path) -> None:
    """Replace ``out`` by ``built`` (what ``out`` held is swapped out, then removed)."""
    old = None
    if os.path.lexists(out):
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
        out.rename(old / out.name)
    built.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
