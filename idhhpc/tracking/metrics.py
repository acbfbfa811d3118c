"""Which numbers become MLflow metrics, and which go to a table artifact instead.

The runs page draws one chart per metric key, so every key costs the visitor a chart: a run
logs the training curves, the headline test metrics (the study's three with their bootstrap CI,
a few more as points) and the all-patients CAM statistics. The complete evaluation (every metric
with its CI and the study's figure) and the CAM statistics per group (class, correct/wrong) are
logged as tables (``metrics_table.json``, ``cam_groups.json``), which the artifact view shows as
tables and the runs page's evaluation view compares across runs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from idhhpc.constants import CLASS_NAMES, EPOCH_COUNTERS
from idhhpc.explain.stats import STATISTIC_KEYS

TEST_WITH_CI = ("auc", "f1_weighted", "accuracy")
"""The study's headline figures: logged with ``_ci_low`` / ``_ci_high`` bounds."""
TEST_POINTS = ("balanced_accuracy", "sensitivity", "specificity", "precision_weighted", "recall_weighted",
               "pr_auc", "mcc", "brier")
LAUNCH_CURVES = ("val/auc", "train/loss", "val/loss")
"""The final fit's per-epoch curves that its launch run repeats."""
CAM_HEADLINE = ("energy_in_tumor", "pointing_game")
"""The CAM statistics a launch run repeats from its explain run."""
CAM_GROUPS = ("all", *CLASS_NAMES, "correct", "wrong")
"""The groups of ``idhhpc.explain.stats.summarise_cam_statistics`` (suffix ``_<group>``, none for all)."""
FIRST_EPOCH_METRIC = "val/auc"
METRICS_TABLE = "metrics_table.json"
CAM_TABLE = "cam_groups.json"


def epoch_metrics(record: Mapping[str, Any]) -> dict[str, float]:
    """An epoch record's numbers without its counters (NaN kept: an undefined AUC is a gap in the
    curve), ``val/auc`` first: Compare's parallel-coordinates plot starts on a run's first metric."""
    values = {k: float(v) for k, v in record.items()
              if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in EPOCH_COUNTERS}
    return dict(sorted(values.items(), key=lambda item: item[0] != FIRST_EPOCH_METRIC))


def evaluation_metrics(document: Mapping[str, Any]) -> dict[str, float]:
    """``test/...`` metrics from a ``metrics.json`` document; undefined values are left out."""
    values, bounds = document["metrics"], document["confidence_intervals"]
    out = {f"test/{key}": values.get(key) for key in (*TEST_WITH_CI, *TEST_POINTS)}
    for key in TEST_WITH_CI:
        low, high = bounds.get(key) or (None, None)
        out |= {f"test/{key}_ci_low": low, f"test/{key}_ci_high": high}
    return finite(out)


def metric_rows(document: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every metric of ``metrics.json`` as a table row: value, CI bounds, the study's figure."""
    bounds, study = document["confidence_intervals"], document.get("study_reference", {})
    rows = []
    for key, value in document["metrics"].items():
        low, high = bounds.get(key) or (None, None)
        rows.append({"metric": key, "value": value, "ci_low": low, "ci_high": high, "study": study.get(key)})
    return rows


def cam_metrics(summary: Mapping[str, float]) -> dict[str, float]:
    """The all-patients group of the CAM summary (``cam/energy_in_tumor``, ``cam/n_cases``, ...)."""
    return finite({key: summary.get(key) for key in (f"cam/{k}" for k in ("n_cases", *STATISTIC_KEYS))})


def cam_group_rows(summary: Mapping[str, float]) -> list[dict[str, Any]]:
    """One row per group with the group's case count and mean statistics."""
    rows = []
    for group in CAM_GROUPS:
        suffix = "" if group == "all" else f"_{group}"
        row = {"group": group, **{k: summary.get(f"cam/{k}{suffix}") for k in ("n_cases", *STATISTIC_KEYS)}}
        rows.append({k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()})
    return rows


def launch_metrics(metrics: Mapping[str, float]) -> dict[str, float]:
    """What a launch run repeats of its stage runs: every ``test/`` and ``cv/`` key and the CAM headline."""
    cam = {f"cam/{key}" for key in CAM_HEADLINE}
    return {k: v for k, v in metrics.items() if k.startswith(("test/", "cv/")) or k in cam}


def hidden_chart_metrics() -> tuple[str, ...]:
    """Keys the pinned runs-page view keeps out of the charts (the CI bounds: they are columns)."""
    return tuple(f"test/{key}_ci_{side}" for key in TEST_WITH_CI for side in ("low", "high"))


def finite(values: Mapping[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in values.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}
