"""The human-readable evaluation report (Markdown) beside metrics.json and the figures."""

from __future__ import annotations

import math
from collections.abc import Mapping

from idhhpc.evaluate.metrics import COUNT_KEYS
from idhhpc.evaluate.reference import STUDY_REFERENCE


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
    counts = summary["class_counts"]
    lines = [
        "# IDH mutation status: test-set evaluation",
        "",
        f"n = {summary['n']} (wildtype {counts['wildtype']}, mutant {counts['mutant']}); "
        f"predicted mutant when P(mutant) >= {summary['threshold']:.4f}. "
        f"95 % CIs: percentile, {summary['n_resamples']} bootstrap resamples stratified by class "
        f"(seed {summary['seed']}).",
        "",
        *_reference_table(metrics, intervals),
        "",
        *_metrics_table(metrics, intervals),
        "",
        "## Figures",
        "",
    ]
    lines += [f"![{caption}]({name})\n" for caption, name in figures.items()]
    return "\n".join(lines).rstrip() + "\n"


def _reference_table(metrics, intervals) -> list[str]:
    rows = [
        "## Comparison with the published study",
        "",
        "| metric | this model | 95 % CI | study | beats reference | study inside CI |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for key, reference in STUDY_REFERENCE.items():
        value = metrics[key]
        low, high = intervals.get(key, (math.nan, math.nan))
        beats = "n/a" if math.isnan(value) else ("yes" if value > reference else "no")
        inside = "n/a" if math.isnan(low) else ("yes" if low <= reference <= high else "no")
        rows.append(f"| {key} | {_fmt(value)} | {_fmt_ci(low, high)} | {reference:.3f} | {beats} | {inside} |")
    return rows


def _metrics_table(metrics, intervals) -> list[str]:
    rows = ["## All metrics", "", "| metric | value | 95 % CI |", "| --- | --- | --- |"]
    for key, value in metrics.items():
        low, high = intervals.get(key, (math.nan, math.nan))
        shown = f"{value:.0f}" if key in COUNT_KEYS else _fmt(value)
        rows.append(f"| {key} | {shown} | {_fmt_ci(low, high)} |")
    return rows


def _fmt(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.3f}"


def _fmt_ci(low: float, high: float) -> str:
    return "" if math.isnan(low) else f"[{low:.3f}, {high:.3f}]"
