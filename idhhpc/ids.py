"""Patient identifiers: the only strings from the data that ever become part of a path."""

from __future__ import annotations

import re

_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class UnsafePatientId(ValueError):
    """A patient identifier that could escape its directory or is not a plain name."""


def validate_patient_id(patient_id: str) -> str:
    """Return ``patient_id`` unchanged if it is safe to use as a file or folder name.

    Allowed: letters, digits, '.', '_' and '-', starting with a letter or digit, no '..',
    at most 128 characters, matched against the whole string (``$`` would let a trailing newline
    through). Anything else (path separators, '..', whitespace, empty) raises.
    """
    if not isinstance(patient_id, str) or not _SAFE_ID.fullmatch(patient_id) or ".." in patient_id:
        raise UnsafePatientId(f"unsafe patient id {patient_id!r}: use letters, digits, '.', '_' or '-' only")
    return patient_id
