"""The folders a served model may read patients from: ``IDHHPC_PATIENT_ROOTS``, and nothing else.

A client of ``mlflow models serve`` names a patient folder by its path on the server; without a
limit, any folder the server's account can read is scored (``../../srv/elsewhere``, a symlink to
another project's data) and the answers tell the caller what exists there. So a path is used
only when it resolves, symlinks followed and ``..`` removed, inside one of the roots named by
the environment variable (``os.pathsep``-separated, read on every request); the check is made
on the folder and again on every file found in it, before a byte of that file is read, and the
resolved path is what is read. With the variable unset no folder is read at all.

The messages say what is wrong without saying what exists: a path outside the roots is refused
alike whether it exists or not, and neither the roots nor a symlink's target are named.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from idhhpc.constants import PATIENT_ROOTS_VARIABLE


class OutsideRoots(PermissionError):
    """A patient path the served model may not read; the message names no server path."""


@dataclass(frozen=True)
class PatientRoots:
    """The resolved allowed roots (none: every path is refused)."""

    roots: tuple[Path, ...]

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> "PatientRoots":
        text = (os.environ if environ is None else environ).get(PATIENT_ROOTS_VARIABLE, "")
        return cls(tuple(Path(os.path.realpath(part)) for part in text.split(os.pathsep) if part.strip()))

    def confine(self, path: Path | str) -> Path:
        """``path`` resolved, if that lies inside a root; else :class:`OutsideRoots`."""
        if not self.roots:
            raise OutsideRoots(f"patient_dir is not accepted by this server: {PATIENT_ROOTS_VARIABLE} names no "
                               f"folder it may read (set it, {os.pathsep!r}-separated, where the model is served); "
                               "the image input works without it")
        resolved = Path(os.path.realpath(path))
        if not any(resolved.is_relative_to(root) for root in self.roots):
            raise OutsideRoots(f"{Path(path).name or 'patient_dir'}: outside the folders this server may read "
                               f"({PATIENT_ROOTS_VARIABLE}), after following links and '..'")
        return resolved
