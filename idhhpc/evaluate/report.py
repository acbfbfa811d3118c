"""The human-readable evaluation report beside metrics.json and the figures, in two renderings.

- ``report.md`` links the figures by relative path: right in an editor, a Git host or the work
  dir, but MLflow's Markdown viewer prints relative images as ``[caption](roc.png)`` text.
- ``report.html`` is the same Markdown rendered as one self-contained page, the figures embedded
  as base64 PNGs (and moved up, after the comparison with the study): MLflow's artifact viewer
  renders HTML in a sandboxed frame where only embedded images show.

The HTML is made from the Markdown, so the two cannot disagree.
"""

from __future__ import annotations

import base64
import html
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from idhhpc.atomic import atomic_write_text
from idhhpc.evaluate.metrics import COUNT_KEYS
from idhhpc.evaluate.reference import STUDY_REFERENCE


def render_report(
    metrics: Mapping[str, float],
    intervals: Mapping[str, tuple[float, float]],
    summary: Mapping[str, object],
    figures: Mapping[str, str],
    sections: Sequence[str] = (),
    title: str = "IDH mutation status: test-set evaluation",
) -> str:
    """Return Markdown: the cohort line, the comparison with the study, every metric with its
    CI, the calibration, further ``sections`` (Markdown lines), and the figures
    (``{caption: relative file name}``) embedded as images.

    ``summary`` needs ``n``, ``class_counts``, ``threshold``, ``n_resamples`` and ``seed``, and
    may hold ``calibration`` (``brier``, ``ece``, ``nll``).
    """
    counts = summary["class_counts"]
    lines = [
        f"# {title}",
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


def _multitask_lines(summary: Mapping[str, object]) -> list[str]:
    """The decoder's validation Dice and the take-off rule's restarts, where they apply."""
    lines = []
    dice = summary.get("dice") or {}
    if dice:
        lines += ["", "Segmentation (the multi-task decoder, validation patients, mean over folds): Dice "
                  + ", ".join(f"{name} {_fmt(value)}" for name, value in dice.items()) + "."]
    restarts = summary.get("takeoff_restarts") or []
    if restarts:
        lines += ["", f"Take-off rule: {sum(restarts)} restart(s) over {len(restarts)} folds "
                  f"({', '.join(str(r) for r in restarts)}); a run restarts from another seed when its training "
                  "loss at the check epoch is above the ratio of its first epoch's (train.takeoff_*)."]
    return lines


def models_table(rows: Sequence[tuple[str, str, float, float, float]]) -> list[str]:
    """The test set's models: ``(title, AUC text, accuracy, weighted F1, threshold)`` per row."""
    lines = ["| model | test AUC [95 % CI] | accuracy | F1 (weighted) | threshold |", "| --- | --- | --- | --- | --- |"]
    return lines + [f"| {title} | {auc} | {accuracy:.3f} | {f1:.3f} | {threshold:.3f} |"
                    for title, auc, accuracy, f1, threshold in rows]


def scorers_table(headline: str, rows: Sequence[tuple[str, str]]) -> list[str]:
    """The reference scorers on the same test patients: ``(name, AUC text)`` after the headline's."""
    if not rows:
        return []
    lines = ["On the same test patients:", "", "| scorer | test AUC [95 % CI] |", "| --- | --- |",
             f"| headline model | {headline} |"]
    return lines + [f"| {name} | {auc} |" for name, auc in rows]


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
    lines += _clinical_rows(summary)
    lines += _multitask_lines(summary)
    lines.append("")
    if baseline and _finite(network["auc"]) and _finite(baseline["auc"]):
        lines.append(f"Network minus baseline: {network['auc'] - baseline['auc']:+.3f}.")
    if oracle and _finite(network["auc"]) and _finite(oracle["auc"]):
        lines.append(f"Gap to the Bayes optimum: {oracle['auc'] - network['auc']:.3f} "
                     f"(the network captures {_captured(network['auc'], oracle['auc'])} of the learnable signal above chance).")
    return lines


def _clinical_rows(summary: Mapping[str, object]) -> list[str]:
    """``evaluate.clinical``: the covariates alone and fused with the network (not imaging-only)."""
    names, alone, fused = summary.get("clinical_inputs") or [], summary.get("clinical_only"), summary.get("with_clinical")
    if not names or not alone or not fused:
        return []
    covariates = " + ".join(names)
    return [f"| {covariates} alone (logistic regression; not imaging) | {_scored(alone)} |",
            f"| network + {covariates} (late fusion, cross-fitted on the same folds; not imaging-only) | {_scored(fused)} |"]


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


_STYLE = ("body{font-family:sans-serif;margin:1.5em;max-width:1100px}table{border-collapse:collapse;margin:.5em 0}"
          "td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}th{background:#f3f3f3}"
          "figure{display:inline-block;width:46%;margin:.5em;vertical-align:top}img{width:100%}")
_IMAGE = re.compile(r"!\[([^\]]*)\]\(([^)]+)\)")
FIGURES_HEADING = "## Figures"


GALLERY_LINK = "\n## Explanations\n\nGrad-CAM gallery of the test patients: [explain/gallery.md](explain/gallery.md) " \
               "([HTML](explain/gallery.html)); statistics in `explain/cam_statistics.json`.\n"


def link_gallery(report: Path) -> None:
    """Append the explanations' link to ``report.md`` once: by the explain step, and by an evaluate
    step that rewrites the report while the gallery it links stays current."""
    if report.is_file() and GALLERY_LINK not in report.read_text():
        atomic_write_text(report, report.read_text() + GALLERY_LINK)


def render_report_html(markdown: str, figure_dir: Path) -> str:
    """``report.md`` as one HTML page: headings, tables, paragraphs, and its images read from
    ``figure_dir`` and embedded; the figures section comes right after the first table."""
    blocks = _sections(markdown.splitlines())
    figures = [b for b in blocks if b and b[0].strip() == FIGURES_HEADING]
    rest = [b for b in blocks if b not in figures]
    ordered = rest[:2] + figures + rest[2:]
    body = "\n".join(_block_html(lines, Path(figure_dir)) for block in ordered for lines in _paragraphs(block))
    title = html.escape(markdown.splitlines()[0].lstrip("# ")) if markdown else ""
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title><style>{_STYLE}</style>"
            f"</head><body>\n{body}\n</body></html>\n")


def _sections(lines: list[str]) -> list[list[str]]:
    """Lines grouped at each ``## `` heading (the part before the first one is its own group)."""
    blocks: list[list[str]] = [[]]
    for line in lines:
        if line.startswith("## "):
            blocks.append([])
        blocks[-1].append(line)
    return [block for block in blocks if block]


def _paragraphs(lines: list[str]) -> list[list[str]]:
    """Runs of non-blank lines; a heading is a paragraph of its own."""
    out: list[list[str]] = [[]]
    for line in lines:
        if not line.strip() or line.startswith("#"):
            out.append([line] if line.startswith("#") else [])
            out.append([])
        else:
            out[-1].append(line)
    return [block for block in out if block]


def _block_html(lines: list[str], figure_dir: Path) -> str:
    first = lines[0]
    if first.startswith("#"):
        level = min(len(first) - len(first.lstrip("#")), 3)
        return f"<h{level}>{_inline(first.lstrip('#').strip())}</h{level}>"
    if first.startswith("|"):
        return _table_html(lines)
    images = [match for line in lines for match in [_IMAGE.fullmatch(line.strip())] if match]
    if images and len(images) == len(lines):
        return "".join(_figure_html(match.group(1), match.group(2), figure_dir) for match in images)
    return f"<p>{' '.join(_inline(line) for line in lines)}</p>"


def _table_html(lines: list[str]) -> str:
    rows = [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in lines]
    rows = [row for row in rows if not all(set(cell) <= set("-: ") for cell in row)]
    header, *body = rows
    head = "".join(f"<th>{_inline(cell)}</th>" for cell in header)
    cells = ["<tr>" + "".join(f"<td>{_inline(cell)}</td>" for cell in row) + "</tr>" for row in body]
    return f"<table><tr>{head}</tr>{''.join(cells)}</table>"


def _figure_html(caption: str, name: str, figure_dir: Path) -> str:
    path = figure_dir / name
    if not path.is_file():
        return f"<p>{html.escape(caption)}: {html.escape(name)} (missing)</p>"
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (f"<figure><img alt='{html.escape(caption)}' src='data:image/png;base64,{data}'>"
            f"<figcaption>{html.escape(caption)} ({html.escape(name)})</figcaption></figure>")


def _inline(text: str) -> str:
    """Escaped text with Markdown's ``code``, **bold** and [links](target) (shown as their text)."""
    text = html.escape(text)
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    text = re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", text)
    return re.sub(r"\[([^\]]+)\]\(([^)]+)\)", r"\1", text)
