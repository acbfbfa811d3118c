"""What the preprocessing stage consumes and produces, shared by cohort ingestion, shards and readers."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class CaseFiles:
    """One patient's files as discovered by cohort ingestion; ``images`` keeps channel order."""

    patient_id: str
    label: int | None
    images: dict[str, Path]
    brain_mask: Path | None = None
    tumor_mask: Path | None = None


@dataclass
class PreprocessedCase:
    """A patient ready for training: float16 ``image`` (C,S,S,S), uint8 masks (S,S,S).

    ``tumor`` keeps the original labels (0, 1, 2, 4); ``geometry`` maps output voxels back to the
    native grid (see :mod:`idhhpc.data.geometry`).
    """

    patient_id: str
    label: int | None
    image: np.ndarray
    brain: np.ndarray
    tumor: np.ndarray | None
    geometry: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    locator_image: np.ndarray | None = None
    """With ``preprocess.locator``: the normalised whole-brain cube (C,S,S,S) float16 the locator sees."""
    locator_tumor: np.ndarray | None = None
    """... and its tumour mask (S,S,S) uint8, 1 inside any compartment."""
    located: np.ndarray | None = None
    """When the crop came from the locator (no tumour file): its mask in the cube (S,S,S) uint8;
    ``tumor`` then holds the reference mask only if a file was given."""


class CaseRejected(Exception):
    """A patient whose files cannot be preprocessed; ``reason`` is one line naming file and problem."""

    def __init__(self, patient_id: str, reason: str):
        super().__init__(f"{patient_id}: {reason}")
        self.patient_id = patient_id
        self.reason = reason

    def __reduce__(self):
        return (CaseRejected, (self.patient_id, self.reason))


class TooFewPatients(RuntimeError):
    """Fewer usable patients than ``data.min_patients`` (after ingestion or preprocessing): the
    summary says why."""
