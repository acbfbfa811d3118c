"""What evaluation writes: test-set metrics, bootstrap CIs, predictions, figures and a report, in one folder."""

from __future__ import annotations

import csv
import io
import math
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike

from idhhpc.atomic import atomic_write_json, atomic_write_text
from idhhpc.constants import (
    CLASS_NAMES,
    METRICS_FILE,
    PREDICTIONS_FILE,
    REPORT_FILE,
    REPORT_HTML_FILE,
)
from idhhpc.evaluate import plots
from idhhpc.evaluate.bootstrap import bootstrap_ci
from idhhpc.evaluate.calibration import (
    expected_calibration_error,
    negative_log_likelihood,
)
from idhhpc.evaluate.inputs import as_binary_arrays, has_both_classes
from idhhpc.evaluate.metrics import compute_metrics, predict_labels
from idhhpc.evaluate.reference import STUDY_REFERENCE
from idhhpc.evaluate.report import render_report, render_report_html
from idhhpc.ids import validate_patient_id

CONFIDENCE_LEVEL = 0.95


def evaluate_predictions(
    y_true: ArrayLike,
    prob: ArrayLike,
    threshold: float,
    patient_ids: Sequence[str],
    out_dir: Path,
    history: list[dict] | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
    sections: Sequence[str] = (),
    title: str | None = None,
) -> dict[str, float]:
    """Write ``metrics.json``, ``predictions.csv``, the PNG figures, ``report.md`` and ``report.html`` to
    ``out_dir`` and return the bare-keyed metrics (callers prefix ``test/`` for MLflow).

    ``threshold`` must come from the validation set (``choose_threshold``), never from these labels.
    ``sections`` are further Markdown lines for the report (other models, out-of-fold figures...);
    ``title`` replaces the report's heading (an external cohort's report says which cohort).
    """
    labels, probs = as_binary_arrays(y_true, prob)
    patient_ids = _checked_patient_ids(patient_ids, len(labels))
    out_dir = Path(out_dir)
    metrics = compute_metrics(labels, probs, threshold)
    intervals = bootstrap_ci(labels, probs, threshold, n_resamples=n_resamples, seed=seed, alpha=1 - CONFIDENCE_LEVEL)
    summary = _summary(labels, threshold, n_resamples, seed)
    summary["calibration"] = {"brier": metrics["brier"], "ece": expected_calibration_error(labels, probs),
                              "nll": negative_log_likelihood(labels, probs)}
    atomic_write_json(out_dir / METRICS_FILE, _metrics_document(metrics, intervals, summary))
    atomic_write_text(out_dir / PREDICTIONS_FILE, _predictions_csv(patient_ids, labels, probs, threshold))
    figures = _write_figures(labels, probs, threshold, metrics, intervals, history, out_dir)
    report = render_report(metrics, intervals, summary, figures, sections, **({"title": title} if title else {}))
    atomic_write_text(out_dir / REPORT_FILE, report)
    atomic_write_text(out_dir / REPORT_HTML_FILE, render_report_html(report, out_dir))
    return metrics


def _checked_patient_ids(patient_ids: Sequence[str], n: int) -> list[str]:
    patient_ids = [validate_patient_id(pid) for pid in patient_ids]
    if len(patient_ids) != n:
        raise ValueError(f"got {len(patient_ids)} patient_ids for {n} predictions")
    if len(set(patient_ids)) != n:
        raise ValueError("patient_ids contain duplicates: one patient would be counted twice")
    return patient_ids


def _summary(labels: np.ndarray, threshold: float, n_resamples: int, seed: int) -> dict[str, object]:
    return {
        "n": int(labels.size),
        "class_counts": {name: int(np.sum(labels == label)) for label, name in enumerate(CLASS_NAMES)},
        "threshold": float(threshold),
        "n_resamples": int(n_resamples),
        "seed": int(seed),
        "confidence_level": CONFIDENCE_LEVEL,
    }


def _metrics_document(metrics, intervals, summary) -> dict[str, object]:
    """Strict JSON: undefined values become null rather than the non-standard NaN."""
    return {
        **summary,
        "metrics": {key: _json_number(value) for key, value in metrics.items()},
        "confidence_intervals": {key: [_json_number(v) for v in bounds] for key, bounds in intervals.items()},
        "study_reference": dict(STUDY_REFERENCE),
    }


def _json_number(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def _predictions_csv(patient_ids: list[str], labels: np.ndarray, probs: np.ndarray, threshold: float) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["patient_id", "label", "prob_mutant", "predicted"])
    for row in zip(patient_ids, labels, probs, predict_labels(probs, threshold)):
        writer.writerow([row[0], int(row[1]), f"{row[2]:.6f}", int(row[3])])
    return buffer.getvalue()


def _write_figures(
    labels, probs, threshold, metrics, intervals, history: list[Mapping] | None, out_dir: Path
) -> dict[str, str]:
    """Return ``{caption: file name}`` of the figures written; curves need both classes."""
    written: dict[str, Path] = {}
    if has_both_classes(labels):
        written["ROC curve"] = plots.plot_roc(labels, probs, threshold, out_dir / "roc.png")
        written["Precision-recall curve"] = plots.plot_precision_recall(
            labels, probs, threshold, out_dir / "precision_recall.png"
        )
    else:
        warnings.warn("evaluate_predictions: one class only; ROC and PR curves skipped", RuntimeWarning, stacklevel=3)
    written["Reliability diagram"] = plots.plot_reliability(labels, probs, out_dir / "reliability.png")
    matrix_path = out_dir / "confusion_matrix.png"
    written["Confusion matrix"] = plots.plot_confusion_matrix(labels, probs, threshold, matrix_path)
    written["Per-class metrics"] = plots.plot_per_class_metrics(metrics, intervals, out_dir / "per_class_metrics.png")
    if history:
        written["Training history"] = plots.plot_history(history, out_dir / "history.png")
    return {caption: path.name for caption, path in written.items()}
