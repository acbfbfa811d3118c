"""The runs-page view the project's links open: which columns, which charts, in which order.

MLflow 3's runs page keeps shareable views in experiment tags ``mlflow.sharedViewState.<key>``
and applies one when the URL says ``viewStateShareKey=<key>``; with the named envelope below it
is also listed in the page's *Views* menu. Without it the table shows no metric or param column
and the chart view opens on alphabetical single-bar charts; with it a visitor sees the launches'
headline metrics as columns and the training curves first.

The state format is the UI's own (``mlflow/server/js`` in 3.17): the page state as JSON,
stored as ``"deflate;" + base64(zlib(json))``. Card ids are fixed strings, so the same view
encodes to the same text and rewriting it is a no-op.
"""

from __future__ import annotations

import base64
import json
import zlib

VIEW_KEY = "idhhpc"
VIEW_NAME = "idhhpc: launches"
SHARED_VIEW_TAG = f"mlflow.sharedViewState.{VIEW_KEY}"
SECTION = "idhhpc-main"

LINE_METRICS = ("val/auc", "train/loss", "val/loss", "lr")
"""Per-epoch curves of the cv and fit runs (and trials)."""
BAR_METRICS = ("test/auc", "cv/oof_auc", "cv/mean_auc", "test/f1_weighted", "test/accuracy", "val/best_auc",
               "cam/energy_in_tumor", "cam/pointing_game")
"""One value per run: the launch's headline, on the parent and the evaluate/explain runs."""
COLUMNS = ("attributes.`Source`", "attributes.`Version`", "attributes.`Models`", "params.`role`", "params.`fold`",
           "metrics.`test/auc`", "metrics.`cv/oof_auc`", "metrics.`cv/mean_auc`", "metrics.`test/f1_weighted`",
           "metrics.`test/accuracy`", "metrics.`val/best_auc`")


def view_state(hidden_metrics: tuple[str, ...] = ()) -> dict:
    """The runs-page state: columns, one section of curves then bars; ``hidden_metrics`` get a
    deleted card, since the page adds a chart for every metric that has no card at all."""
    charts = [_line_card(key, i) for i, key in enumerate(LINE_METRICS)]
    charts += [_bar_card(key, 100 + i) for i, key in enumerate(BAR_METRICS)]
    charts += [{**_bar_card(key, 200 + i), "deleted": True} for i, key in enumerate(hidden_metrics)]
    return {
        "selectedColumns": list(COLUMNS),
        "compareRunCharts": charts,
        "compareRunSections": [{"uuid": SECTION, "name": "IDH model", "display": True, "isReordered": False,
                                "deleted": False, "isGenerated": False}],
        "isAccordionReordered": True,
        "hideEmptyCharts": True,
    }


def shared_view_value(state: dict, saved_at_ms: int) -> str:
    """The tag value: the envelope the *Views* menu lists, around the compressed state."""
    return json.dumps({"name": VIEW_NAME, "createdAt": saved_at_ms, "updatedAt": saved_at_ms,
                       "state": encode_state(state)})


def same_view(tag_value: str | None, state: dict) -> bool:
    """True when ``tag_value`` already holds ``state`` (timestamps aside)."""
    try:
        return json.loads(tag_value or "")["state"] == encode_state(state)
    except (ValueError, KeyError, TypeError):
        return False


def encode_state(state: dict) -> str:
    raw = json.dumps(state, separators=(",", ":"), sort_keys=True).encode()
    return "deflate;" + base64.b64encode(zlib.compress(raw, 9)).decode()


def decode_state(text: str) -> dict:
    """The inverse of :func:`encode_state` (tests and debugging read views back with it)."""
    if text.startswith("deflate;"):
        return json.loads(zlib.decompress(base64.b64decode(text[len("deflate;"):])))
    return json.loads(text)


def _card(kind: str, key: str, index: int) -> dict:
    return {"uuid": f"idhhpc-card-{index:03d}", "type": kind, "runsCountToCompare": 10, "metricSectionId": SECTION,
            "deleted": False, "isGenerated": False, "displayName": key, "metricKey": key}


def _bar_card(key: str, index: int) -> dict:
    return _card("BAR", key, index)


def _line_card(key: str, index: int) -> dict:
    return {**_card("LINE", key, index), "lineSmoothness": 0, "xAxisKey": "step", "xAxisScaleType": "linear",
            "scaleType": "linear", "range": {}, "selectedXAxisMetricKey": "", "yAxisKey": "metric",
            "yAxisExpressions": [], "ignoreOutliers": False, "useGlobalXaxisKey": True,
            "useGlobalLineSmoothing": True, "selectedMetricKeys": [key]}
