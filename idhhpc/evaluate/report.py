"""The human-readable evaluation report beside metrics.json and the figures, in two renderings.

- ``report.md`` links the figures by relative path: right in an editor, a Git host or the work
  dir, but MLflow's Markdown viewer prints relative images as ``[caption](roc.png)`` text.
- ``report.html`` is one self-contained page with the figures embedded as base64 PNGs: MLflow's
  artifact viewer renders HTML in a sandboxed frame where only embedded images show.

Both come from the same tables, so they cannot disagree.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Mapping
from pathlib import Path

from idhhpc.evaluate.metrics import COUNT_KEYS
from idhhpc.evaluate.reference import STUDY_REFERENCE

TITLE = "IDH mutation status: test-set evaluation"
_STYLE = ("body{font-family:sans-serif;margin:1.5em;max-width:1100px}table{border-collapse:collapse;margin:.5em 0}"
          "td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}th{background:#f3f3f3}"
          "figure{display:inline-block;width:46%;margin:.5em;vertical-align:top}img{width:100%}")


def render_report(
    metrics: Mapping[str, float],
    intervals: Mapping[str, tuple[float, float]],
    summary: Mapping[str, object],
    figures: Mapping[str, str],
) -> str:
    """Return Markdown: the cohort line, the comparison with the study, every metric with its
    CI, and the figures (``{caption: relative file name}``) embedded as images.

    ``summary`` needs ``n``, ``class_counts``, ``threshold``, ``n_resamples`` and ``seed``.
    """
    lines = [f"# {TITLE}", "", _cohort_line(summary), "", "## Comparison with the published study", ""]
    lines += _markdown_table(_reference_rows(metrics, intervals))
    lines += ["", "## All metrics", ""]
    lines += _markdown_table(_metric_rows(metrics, intervals))
    lines += ["", "## Figures", ""]
    lines += [f"![{caption}]({name})\n" for caption, name in figures.items()]
    return "\n".join(lines).rstrip() + "\n"


def render_report_html(
    metrics: Mapping[str, float],
    intervals: Mapping[str, tuple[float, float]],
    summary: Mapping[str, object],
    figures: Mapping[str, str],
    figure_dir: Path,
) -> str:
    """The same report as one HTML page, figures (files in ``figure_dir``, embedded) before the
    full metrics table, so the artifact view opens on the curves."""
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{TITLE}</title><style>{_STYLE}</style>",
             f"</head><body><h1>{TITLE}</h1><p>{html.escape(_cohort_line(summary))}</p>",
             "<h2>Comparison with the published study</h2>", _html_table(_reference_rows(metrics, intervals)),
             "<h2>Figures</h2>"]
    for caption, name in figures.items():
        data = base64.b64encode((Path(figure_dir) / name).read_bytes()).decode("ascii")
        parts.append(f"<figure><img alt='{html.escape(caption)}' src='data:image/png;base64,{data}'>"
                     f"<figcaption>{html.escape(caption)} ({html.escape(name)})</figcaption></figure>")
    parts += ["<h2>All metrics</h2>", _html_table(_metric_rows(metrics, intervals))]
    return "\n".join([*parts, "</body></html>"]) + "\n"


def _cohort_line(summary: Mapping[str, object]) -> str:
    counts = summary["class_counts"]
    return (f"n = {summary['n']} (wildtype {counts['wildtype']}, mutant {counts['mutant']}); "
            f"predicted mutant when P(mutant) >= {summary['threshold']:.4f}. "
            f"95 % CIs: percentile, {summary['n_resamples']} bootstrap resamples stratified by class "
            f"(seed {summary['seed']}).")


def _reference_rows(metrics, intervals) -> list[list[str]]:
    rows = [["metric", "this model", "95 % CI", "study", "beats reference", "study inside CI"]]
    for key, reference in STUDY_REFERENCE.items():
        value = metrics[key]
        low, high = intervals.get(key, (math.nan, math.nan))
        beats = "n/a" if math.isnan(value) else ("yes" if value > reference else "no")
        inside = "n/a" if math.isnan(low) else ("yes" if low <= reference <= high else "no")
        rows.append([key, _fmt(value), _fmt_ci(low, high), f"{reference:.3f}", beats, inside])
    return rows


def _metric_rows(metrics, intervals) -> list[list[str]]:
    rows = [["metric", "value", "95 % CI"]]
    for key, value in metrics.items():
        low, high = intervals.get(key, (math.nan, math.nan))
        shown = f"{value:.0f}" if key in COUNT_KEYS else _fmt(value)
        rows.append([key, shown, _fmt_ci(low, high)])
    return rows


def _markdown_table(rows: list[list[str]]) -> list[str]:
    header, *body = rows
    return [_md_row(header), _md_row(["---"] * len(header)), *map(_md_row, body)]


def _md_row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _html_table(rows: list[list[str]]) -> str:
    header, *body = rows
    head = "".join(f"<th>{html.escape(c)}</th>" for c in header)
    cells = ["<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in body]
    return f"<table><tr>{head}</tr>{''.join(cells)}</table>"


def _fmt(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.3f}"


def _fmt_ci(low: float, high: float) -> str:
    return "" if math.isnan(low) else f"[{low:.3f}, {high:.3f}]"
