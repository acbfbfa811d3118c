"""The human-readable evaluation report (Markdown) beside metrics.json and the figures."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from idhhpc.evaluate.metrics import COUNT_KEYS
from idhhpc.evaluate.reference import STUDY_REFERENCE


def render_report(
    metrics: Mapping[str, float],
    intervals: Mapping[str, tuple[float, float]],
    summary: Mapping[str, object],
    figures: Mapping[str, str],
    sections: Sequence[str] = (),
) -> str:
    """Return Markdown: the cohort line, the comparison with the study, every metric with its
    CI, the calibration, further ``sections`` (Markdown lines), and the figures
    (``{caption: relative file name}``) embedded as images.

    ``summary`` needs ``n``, ``class_counts``, ``threshold``, ``n_resamples`` and ``seed``, and
    may hold ``calibration`` (``brier``, ``ece``, ``nll``).
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
        *_calibration_lines(summary.get("calibration")),
        *sections,
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


def cross_validation_section(summary: Mapping[str, object]) -> list[str]:
    """Markdown for the out-of-fold figures (a ``CrossValidationSummary.to_dict()``): the network,
    the classical baseline and the Bayes optimum on the same patients, and what separates them."""
    network, baseline, oracle = summary["network"], summary.get("baseline"), summary.get("oracle")
    lines = ["## Out-of-fold (cross-validation)", "",
             f"Every non-test patient scored once by the fold model that never saw it (n = {network['n']}, "
             f"{len(summary['per_fold_auc'])} folds; per-fold AUC "
             f"{', '.join(_fmt(a) for a in summary['per_fold_auc'])}). 95 % CIs: stratified bootstrap.", "",
             "| scorer | out-of-fold AUC [95 % CI] |", "| --- | --- |",
             f"| network | {_scored(network)} |"]
    if baseline:
        lines.append(f"| classical baseline (logistic regression, tumour intensity statistics) | {_scored(baseline)} |")
    if oracle:
        lines.append(f"| Bayes-optimal score (phantom oracle) | {_scored(oracle)} |")
    lines.append("")
    if baseline and _finite(network["auc"]) and _finite(baseline["auc"]):
        lines.append(f"Network minus baseline: {network['auc'] - baseline['auc']:+.3f}.")
    if oracle and _finite(network["auc"]) and _finite(oracle["auc"]):
        lines.append(f"Gap to the Bayes optimum: {oracle['auc'] - network['auc']:.3f} "
                     f"(the network captures {_captured(network['auc'], oracle['auc'])} of the learnable signal above chance).")
    return lines


def _scored(scored: Mapping[str, float]) -> str:
    return "n/a" if not _finite(scored["auc"]) else f"{scored['auc']:.3f} [{scored['low']:.3f}, {scored['high']:.3f}]"


def _captured(auc: float, optimum: float) -> str:
    return "n/a" if optimum <= 0.5 else f"{max(0.0, auc - 0.5) / (optimum - 0.5):.0%}"


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _calibration_lines(calibration: Mapping[str, float] | None) -> list[str]:
    if not calibration:
        return []
    return ["## Calibration", "",
            f"Brier score {_fmt(calibration['brier'])}, expected calibration error (10 bins) "
            f"{_fmt(calibration['ece'])}, negative log-likelihood {_fmt(calibration['nll'])} "
            "(probabilities after temperature scaling fitted on validation; see the reliability diagram).", ""]
