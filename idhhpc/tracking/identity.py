"""What tells runs of one launch apart, as MLflow params: ``role``, ``fold`` and ``split_hash``.

Every run also carries the flattened job config, which is the same for all runs of a launch;
without these three, Compare's "Show diff only" is empty and the parallel-coordinates plot has
no parameter axis. ``split_hash`` names exactly which patients a run trained, validated or was
tested on, so two launches on the same split are recognisably comparable.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from idhhpc.config import fingerprint

ROLES = ("launch", "cv", "cv-summary", "fit", "evaluate", "explain", "tune", "trial")
"""The roles runs have today; a stage run's role defaults to its stage name."""
FIT_RUN = "fit"
_FOLD_RUN = re.compile(r"fold-(\d+)")
"""The training run names of ``idhhpc.workdir.fold_run_name`` and ``idhhpc.workdir.FIT_RUN``
(``tests/tracking/test_identity.py`` checks they agree)."""


def split_hash(**groups: Sequence[str]) -> str:
    """A short fingerprint of the patients of each named group (``train=..., val=...``)."""
    return fingerprint({name: sorted(ids) for name, ids in groups.items()})[:12]


def run_params(role: str, fold: int | None = None, **groups: Sequence[str]) -> dict[str, str]:
    """The distinguishing params of one run; ``groups`` are the patient lists it uses."""
    params = {"role": role}
    if fold is not None:
        params["fold"] = str(fold)
    if groups:
        params["split_hash"] = split_hash(**groups)
    return params


def training_identity(run_name: str) -> dict[str, Any]:
    """``role`` cv and the ``fold`` of a fold run, ``role`` fit for the final model."""
    match = _FOLD_RUN.fullmatch(run_name)
    if match:
        return {"role": "cv", "fold": int(match.group(1))}
    if run_name == FIT_RUN:
        return {"role": "fit"}
    raise ValueError(f"training run {run_name!r} is neither 'fit' nor 'fold-<k>'")
