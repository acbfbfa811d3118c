"""Evaluation figures, each written atomically as a PNG and returned as its path.

Figures are built with the object-oriented ``matplotlib.figure.Figure`` (rendered by Agg),
never through pyplot, so no display is needed and no figure outlives its function.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from sklearn.metrics import (
    ConfusionMatrixDisplay,
    PrecisionRecallDisplay,
    RocCurveDisplay,
)

from idhhpc.atomic import atomic_path
from idhhpc.constants import CLASS_NAMES, EPOCH_COUNTERS
from idhhpc.evaluate.calibration import expected_calibration_error, reliability_bins
from idhhpc.evaluate.inputs import as_binary_arrays
from idhhpc.evaluate.metrics import compute_metrics, predict_labels

DPI = 120


def save_figure(figure: Figure, path: Path) -> Path:
    """Write ``figure`` to ``path`` atomically and release it."""
    try:
        with atomic_path(path) as tmp:
            figure.savefig(tmp, format="png", dpi=DPI, bbox_inches="tight")
    finally:
        figure.clear()
    return Path(path)


def plot_history(history: Sequence[Mapping[str, float]], path: Path) -> Path:
    """Plot per-epoch records, one panel per quantity: ``train/loss`` and ``val/loss`` share the
    loss panel, ``val/auc`` has its own 0-1 axis, ``lr`` a log axis; counters such as
    ``optimizer_step`` are not drawn (on a shared axis they flatten every other curve). Missing
    values leave gaps."""
    panels = _history_panels(history)
    if not panels:
        raise ValueError("history holds no numeric series besides its counters: nothing to plot")
    epochs = [record.get("epoch", index) for index, record in enumerate(history)]
    figure = Figure(figsize=(4.5 * len(panels), 3.8), layout="constrained")
    for ax, (quantity, keys) in zip(figure.subplots(1, len(panels), squeeze=False)[0], panels.items()):
        series = {key: np.array([record.get(key, np.nan) for record in history], dtype=float) for key in keys}
        for key, values in series.items():
            ax.plot(epochs, values, marker="o", markersize=3, label=key)
        title = _QUANTITY_TITLES.get(quantity, quantity)
        ax.set(title=title, xlabel="epoch", ylabel=title)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if quantity == "auc":
            ax.set_ylim(0, 1)
        if quantity == "lr" and all(np.nanmin(values) > 0 for values in series.values()):
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend()
    figure.suptitle("Training history")
    return save_figure(figure, path)


_QUANTITY_TITLES = {"auc": "AUC", "lr": "learning rate", "loss": "loss"}


def _history_panels(history: Sequence[Mapping[str, float]]) -> dict[str, list[str]]:
    """``{quantity: keys}``: a key's quantity is its last ``/`` part (``val/auc`` → ``auc``)."""
    keys = sorted({key for record in history for key, value in record.items() if _is_number(value)}
                  - set(EPOCH_COUNTERS))
    panels: dict[str, list[str]] = {}
    for key in keys:
        panels.setdefault(key.rsplit("/", 1)[-1], []).append(key)
    order = [q for q in ("loss", "auc", "lr") if q in panels] + sorted(set(panels) - {"loss", "auc", "lr"})
    return {quantity: panels[quantity] for quantity in order}


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float, np.number)) and not isinstance(value, bool)


def plot_confusion_matrix(y_true, prob, threshold: float, path: Path) -> Path:
    """Counts beside the row-normalised matrix (each row sums to 1: recall per true class)."""
    labels, probs = as_binary_arrays(y_true, prob)
    predicted = predict_labels(probs, threshold)
    figure = Figure(figsize=(10, 4.2), layout="constrained")
    for ax, normalize, title in zip(figure.subplots(1, 2), (None, "true"), ("counts", "row-normalised")):
        ConfusionMatrixDisplay.from_predictions(
            labels, predicted, labels=[0, 1], display_labels=list(CLASS_NAMES), normalize=normalize,
            values_format="d" if normalize is None else ".2f", cmap="Blues", ax=ax,
        )  # fmt: skip
        ax.set(title=f"Confusion matrix ({title})", xlabel="predicted label", ylabel="true label")
    figure.suptitle(f"Threshold {threshold:.3f} on P(mutant)")
    return save_figure(figure, path)


def plot_roc(y_true, prob, threshold: float, path: Path) -> Path:
    """ROC curve with its AUC, the chance diagonal and the chosen operating point."""
    labels, probs = as_binary_arrays(y_true, prob)
    metrics = compute_metrics(labels, probs, threshold)
    figure = Figure(figsize=(5.5, 5), layout="constrained")
    ax = figure.subplots()
    RocCurveDisplay.from_predictions(labels, probs, pos_label=1, name="model", ax=ax, plot_chance_level=True)
    _mark_operating_point(ax, 1 - metrics["specificity"], metrics["sensitivity"], threshold)
    ax.set(title="ROC curve (positive class: IDH mutant)", xlabel="1 - specificity", ylabel="sensitivity")
    ax.legend(loc="lower right")
    return save_figure(figure, path)


def plot_precision_recall(y_true, prob, threshold: float, path: Path) -> Path:
    """Precision-recall curve with average precision, the prevalence baseline and the operating point."""
    labels, probs = as_binary_arrays(y_true, prob)
    metrics = compute_metrics(labels, probs, threshold)
    figure = Figure(figsize=(5.5, 5), layout="constrained")
    ax = figure.subplots()
    PrecisionRecallDisplay.from_predictions(labels, probs, pos_label=1, name="model", ax=ax, plot_chance_level=True)
    _mark_operating_point(ax, metrics["recall_mutant"], metrics["precision_mutant"], threshold)
    ax.set(title="Precision-recall curve (mutant)", xlabel="recall (mutant)", ylabel="precision (mutant)")
    ax.set_ylim(0, 1.02)
    ax.legend(loc="lower left")
    return save_figure(figure, path)


def _mark_operating_point(ax: Axes, x: float, y: float, threshold: float) -> None:
    ax.plot([x], [y], marker="o", markersize=9, color="crimson", linestyle="none",
            label=f"operating point (threshold {threshold:.3f})")  # fmt: skip


def plot_per_class_metrics(
    metrics: Mapping[str, float], intervals: Mapping[str, tuple[float, float]], path: Path
) -> Path:
    """Grouped bars of precision / recall / F1 for each class and the weighted average, with CI whiskers."""
    names = ("precision", "recall", "f1")
    groups = (*CLASS_NAMES, "weighted")
    width = 0.8 / len(groups)
    figure = Figure(figsize=(7, 4.5), layout="constrained")
    ax = figure.subplots()
    for offset, group in enumerate(groups):
        keys = [f"{name}_{group}" for name in names]
        values = np.array([metrics[key] for key in keys], dtype=float)
        errors = _error_bars(values, [intervals.get(key, (np.nan, np.nan)) for key in keys])
        positions = np.arange(len(names)) + (offset - (len(groups) - 1) / 2) * width
        ax.bar(positions, np.nan_to_num(values), width, yerr=errors, capsize=4, label=group)
        for x, value, top in zip(positions, values, np.nan_to_num(values) + errors[1]):
            text = "n/a" if np.isnan(value) else f"{value:.2f}"
            ax.text(x, top + 0.01, text, ha="center", va="bottom", fontsize=8)
    ax.set_xticks(np.arange(len(names)), [name if name != "f1" else "F1" for name in names])
    ax.set(title="Per-class metrics with 95 % bootstrap CI", ylabel="score", ylim=(0, 1.12))
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.08), ncols=len(groups))
    return save_figure(figure, path)


def _error_bars(values: np.ndarray, intervals: Sequence[tuple[float, float]]) -> np.ndarray:
    """Asymmetric whisker lengths ``(2, k)``; a missing interval draws no whisker."""
    low, high = np.array(intervals, dtype=float).T
    return np.nan_to_num(np.clip(np.stack([values - low, high - values]), 0, None))


def plot_roc_comparison(curves: Mapping[str, tuple[Sequence[int], Sequence[float]]], path: Path,
                        title: str = "ROC curves on the same patients") -> Path:
    """One ROC curve per scorer (network, baseline, Bayes optimum...) on the same patients."""
    figure = Figure(figsize=(5.5, 5), layout="constrained")
    ax = figure.subplots()
    for index, (name, (labels, scores)) in enumerate(curves.items()):
        RocCurveDisplay.from_predictions(np.asarray(labels), np.asarray(scores, dtype=float), pos_label=1, name=name,
                                         ax=ax, plot_chance_level=index == len(curves) - 1)
    ax.set(title=title, xlabel="1 - specificity", ylabel="sensitivity")
    ax.legend(loc="lower right")
    return save_figure(figure, path)


def plot_reliability(y_true, prob, path: Path, bins: int = 10) -> Path:
    """Observed mutant rate against mean P(mutant) per probability bin, with the case counts."""
    labels, probs = as_binary_arrays(y_true, prob)
    points = reliability_bins(labels, probs, bins)
    figure = Figure(figsize=(5.5, 5), layout="constrained")
    ax = figure.subplots()
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfectly calibrated")
    ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", color="crimson", label="model")
    for predicted, observed, count in points:
        ax.annotate(str(count), (predicted, observed), textcoords="offset points", xytext=(4, -10), fontsize=8)
    ece = expected_calibration_error(labels, probs, bins)
    ax.set(title=f"Reliability (ECE {ece:.3f}, {bins} bins; n per bin)", xlabel="mean P(mutant)",
           ylabel="observed mutant rate", xlim=(0, 1), ylim=(0, 1))
    ax.legend(loc="upper left")
    return save_figure(figure, path)
