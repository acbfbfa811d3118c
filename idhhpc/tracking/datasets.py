"""The cohort as MLflow datasets: which patients of which manifest a run trained, validated or tested on.

A dataset's digest joins the manifest's sha256 (the cohort as ingested) and the hash of the
patients of that part of the split, so the runs table's *Dataset* column reads
``phantom-cohort-training (3f2a9c1e-7b0d44a1)``: equal digests mean the same data. The
entity is built directly (schema and profile as MLflow stores them) rather than through
``mlflow.data.from_pandas``, which warns about ambiguous local sources and reads every row.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from idhhpc.atomic import sha256_file
from idhhpc.config import JobConfig
from idhhpc.tracking.identity import split_hash
from idhhpc.workdir import WorkDir

CONTEXTS = {"train": "training", "val": "validation", "test": "test"}
"""Split group → MLflow's dataset context (the badge on the run page)."""


def cohort_datasets(config: JobConfig, groups: Mapping[str, Sequence[str]]) -> list[dict[str, Any]]:
    """One dataset record per split group (``train``/``val``/``test`` → patient ids); none when
    the cohort stage has not written a manifest."""
    manifest = WorkDir(config.work_dir).manifest
    if not manifest.is_file():
        return []
    rows = _manifest_rows(manifest)
    digest = sha256_file(manifest)[:8]
    cohort = Path(config.data.root).name if config.data.root else "cohort"
    return [_dataset(manifest, rows, cohort, digest, group, ids) for group, ids in groups.items()]


def _dataset(manifest: Path, rows: dict[str, dict[str, str]], cohort: str, digest: str, group: str,
             ids: Sequence[str]) -> dict[str, Any]:
    context = CONTEXTS.get(group, group)
    labels = [rows[pid]["label"] for pid in ids if pid in rows]
    columns = list(next(iter(rows.values()), {"patient_id": "", "label": ""}))
    schema = {"mlflow_colspec": [{"type": "long" if c == "label" else "string", "name": c, "required": True}
                                 for c in columns]}
    profile = {"num_rows": len(ids), "num_mutant": labels.count("1"), "num_wildtype": labels.count("0")}
    return {"context": context, "dataset": {
        "name": f"{cohort}-{context}", "digest": f"{digest}-{split_hash(**{group: ids})[:8]}",
        "source_type": "local", "source": json.dumps({"uri": str(manifest.resolve())}),
        "schema": json.dumps(schema), "profile": json.dumps(profile)}}


def _manifest_rows(manifest: Path) -> dict[str, dict[str, str]]:
    with open(manifest, newline="") as fh:
        return {row["patient_id"]: row for row in csv.DictReader(fh)}
