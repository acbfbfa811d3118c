"""An external cohort's report: the internal test's figures, on patients from another site.

The launch's models score the external patients unchanged: the threshold chosen on internal
validation is transported as it is (a site shift that moves the probabilities shows as lost
sensitivity or specificity, not hidden by a new threshold), and calibration is measured on the
external patients (Brier, ECE, calibration slope and intercept, the reliability diagram). The
report puts the internal test beside the external one, gives the drop in AUC, the other model,
the cohort without harmonisation when it was harmonised, one row per scanner where the metadata
names one, what the leakage guard excluded, and every quarantined patient with the reason.
``predictions.csv`` holds every external patient: the scored ones with ``prob_mutant``, the
quarantined ones with their reason (for a duplicate, the training patient it matches).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from idhhpc.atomic import atomic_write_json, atomic_write_text
from idhhpc.constants import EXTERNAL_SUMMARY_FILE, PREDICTIONS_FILE
from idhhpc.evaluate.calibration import calibration_slope_intercept, expected_calibration_error
from idhhpc.evaluate.crossval import Scored
from idhhpc.evaluate.metrics import compute_metrics, predict_labels
from idhhpc.evaluate.outputs import evaluate_predictions
from idhhpc.evaluate.segmentation import compartment_dice, mean_dice

HEADLINE_KEYS = ("auc", "f1_weighted", "accuracy")
SITE_COLUMNS = ("manufacturer", "field_strength", "age")


@dataclass
class ModelScores:
    """One model's probabilities for the scored external patients and its internal threshold."""

    name: str
    probs: np.ndarray
    threshold: float


@dataclass
class ExternalCohort:
    """What the report is made of: the scored patients, their scores and everything excluded."""

    name: str
    patient_ids: list[str]
    labels: np.ndarray
    models: dict[str, ModelScores]
    headline: str
    unharmonised: ModelScores | None = None
    sites: dict[str, dict[str, str]] = field(default_factory=dict)
    quarantined: list[tuple[str, str]] = field(default_factory=list)
    duplicates: list[tuple[str, str, float]] = field(default_factory=list)
    """(external patient, training patient, similarity; NaN when matched by BraTS ID)."""
    compared_with: int = 0
    threshold: float = math.nan
    """The leakage guard's similarity threshold."""
    closest_kept: float = math.nan
    """The highest similarity of a patient the guard kept."""
    harmonise: str = "none"
    dice: dict[str, float] = field(default_factory=dict)
    """Mean Dice of the final fit's segmentation on the patients with a mask (a multi-task model only)."""


def segmentation_dice(predictor: Any, cases: Iterable[tuple[np.ndarray, np.ndarray | None]]) -> dict[str, float]:
    """Mean Dice per compartment (and ``n``) of ``predictor``'s segmentation of each (image, tumour
    mask) pair with a mask; empty when the model does not segment or no patient has a mask."""
    if not getattr(predictor, "segments", False):
        return {}
    rows = []
    for image, tumor in cases:
        if tumor is not None and np.any(tumor):
            rows.append(compartment_dice(predictor.predict_with_segmentation(image)[1], tumor))
    return {**mean_dice(rows), "n": float(len(rows))} if rows else {}


def write_external_report(cohort: ExternalCohort, out_dir: Path, internal: Mapping[str, Any] | None,
                          n_resamples: int, seed: int) -> dict[str, Any]:
    """Write the cohort's report, figures, ``predictions.csv`` and ``external.json`` into
    ``out_dir``; return the summary (``internal`` is the internal test's ``metrics.json``)."""
    headline = cohort.models[cohort.headline]
    summary = summarise(cohort, internal, n_resamples, seed)
    evaluate_predictions(cohort.labels, headline.probs, headline.threshold, cohort.patient_ids, out_dir,
                         n_resamples=n_resamples, seed=seed, sections=report_sections(cohort, summary, n_resamples, seed),
                         title=f"IDH mutation status: external cohort {cohort.name}")
    atomic_write_text(Path(out_dir) / PREDICTIONS_FILE, predictions_csv(cohort))
    atomic_write_json(Path(out_dir) / EXTERNAL_SUMMARY_FILE, summary)
    return summary


def summarise(cohort: ExternalCohort, internal: Mapping[str, Any] | None, n_resamples: int, seed: int) -> dict[str, Any]:
    """The numbers of the report, as plain JSON (what MLflow gets: :func:`mlflow_metrics`)."""
    headline = cohort.models[cohort.headline]
    metrics = compute_metrics(cohort.labels, headline.probs, headline.threshold)
    scored = Scored.of(cohort.labels.tolist(), headline.probs.tolist(), n_resamples, seed)
    slope, intercept = calibration_slope_intercept(cohort.labels, headline.probs)
    external = {key: _number(metrics[key]) for key in (*HEADLINE_KEYS, "sensitivity", "specificity", "brier")}
    external |= {"auc_ci": [_number(scored.low), _number(scored.high)],
                 "ece": _number(expected_calibration_error(cohort.labels, headline.probs)),
                 "calibration_slope": _number(slope), "calibration_intercept": _number(intercept)}
    internal_auc = _number((internal or {}).get("metrics", {}).get("auc"))
    internal_ci = [_number(v) for v in ((internal or {}).get("confidence_intervals", {}).get("auc") or (None, None))]
    summary = {"name": cohort.name, "headline_model": cohort.headline, "threshold": headline.threshold,
               "harmonise": cohort.harmonise, "n": len(cohort.patient_ids),
               "class_counts": {"wildtype": int((cohort.labels == 0).sum()), "mutant": int((cohort.labels == 1).sum())},
               "external": external, "internal_auc": internal_auc, "internal_auc_ci": internal_ci,
               "auc_drop": _number(internal_auc - external["auc"]) if internal_auc is not None and
               external["auc"] is not None else None,
               "models": {m.name: _number(compute_metrics(cohort.labels, m.probs, m.threshold)["auc"])
                          for m in cohort.models.values()},
               "quarantined": len(cohort.quarantined), "duplicates": len(cohort.duplicates),
               "compared_with": cohort.compared_with, "leakage_threshold": cohort.threshold,
               "closest_kept_similarity": _number(cohort.closest_kept), "groups": group_rows(cohort, n_resamples, seed),
               "dice": {k: _number(v) for k, v in cohort.dice.items()}}
    if cohort.unharmonised is not None:
        summary["unharmonised_auc"] = _number(compute_metrics(cohort.labels, cohort.unharmonised.probs,
                                                              cohort.unharmonised.threshold)["auc"])
    return summary


def mlflow_metrics(summary: Mapping[str, Any]) -> dict[str, float]:
    """``external/<name>/auc`` (with ``_ci_low``/``_ci_high``), f1, accuracy, calibration, the drop,
    the counts: what the launch run shows beside ``test/auc``."""
    prefix, external = f"external/{summary['name']}/", summary["external"]
    values = {key: external[key] for key in (*HEADLINE_KEYS, "brier", "ece", "calibration_slope",
                                             "calibration_intercept")}
    values |= {"auc_ci_low": external["auc_ci"][0], "auc_ci_high": external["auc_ci"][1],
               "auc_drop": summary["auc_drop"], "n": summary["n"], "duplicates": summary["duplicates"],
               "quarantined": summary["quarantined"], "unharmonised_auc": summary.get("unharmonised_auc"),
               "dice_tumor": summary["dice"].get("tumor")}
    return {prefix + key: float(v) for key, v in values.items() if isinstance(v, (int, float)) and math.isfinite(v)}


def group_rows(cohort: ExternalCohort, n_resamples: int, seed: int) -> list[dict[str, Any]]:
    """One row per scanner (manufacturer and field strength) when the metadata names more than one."""
    headline = cohort.models[cohort.headline]
    keys = [_scanner(cohort.sites.get(pid, {})) for pid in cohort.patient_ids]
    if len(set(keys)) < 2:
        return []
    rows = []
    for key in sorted(set(keys)):
        members = np.array([k == key for k in keys])
        labels, probs = cohort.labels[members], headline.probs[members]
        scored = Scored.of(labels.tolist(), probs.tolist(), n_resamples, seed)
        accuracy = float(np.mean(predict_labels(probs, headline.threshold) == labels))
        rows.append({"scanner": key, "n": int(members.sum()), "mutant": int(labels.sum()), "auc": _number(scored.auc),
                     "auc_ci": [_number(scored.low), _number(scored.high)], "accuracy": accuracy})
    return rows


def _scanner(facts: Mapping[str, str]) -> str:
    parts = [facts.get("manufacturer", ""), f"{facts['field_strength']} T" if facts.get("field_strength") else ""]
    return " ".join(p for p in parts if p) or "not recorded"


def report_sections(cohort: ExternalCohort, summary: Mapping[str, Any], n_resamples: int, seed: int) -> list[str]:
    external = summary["external"]
    lines = ["## Internal and external", "",
             f"The threshold {summary['threshold']:.4f} was chosen on internal validation and is applied unchanged; "
             f"probabilities are the internal models' calibrated ones (harmonisation: {cohort.harmonise}).", "",
             "| cohort | AUC [95 % CI] |", "| --- | --- |"]
    if summary["internal_auc"] is not None:
        low, high = summary["internal_auc_ci"]
        lines.append(f"| internal test | {_fmt(summary['internal_auc'])} [{_fmt(low)}, {_fmt(high)}] |")
    lines += [f"| external {cohort.name} | {_fmt(external['auc'])} [{_fmt(external['auc_ci'][0])}, "
              f"{_fmt(external['auc_ci'][1])}] |", "",
              f"Drop in AUC from internal to external: {_fmt(summary['auc_drop'])}.", "",
              "## Models on the external cohort", "", "| model | AUC [95 % CI] | threshold |", "| --- | --- | --- |"]
    rows = list(cohort.models.values()) + ([cohort.unharmonised] if cohort.unharmonised else [])
    for model in rows:
        scored = Scored.of(cohort.labels.tolist(), model.probs.tolist(), n_resamples, seed)
        lines.append(f"| {model.name} | {scored.text()} | {model.threshold:.4f} |")
    lines += ["", "## External calibration", "",
              f"Calibration slope {_fmt(external['calibration_slope'])} and intercept "
              f"{_fmt(external['calibration_intercept'])} (1 and 0 when calibrated; the logistic recalibration "
              f"logit P(mutant) = a + b logit p on the external patients), Brier {_fmt(external['brier'])}, "
              f"ECE {_fmt(external['ece'])}.", ""]
    return (lines + _dice_lines(summary["dice"]) + _group_lines(summary["groups"]) + _guard_lines(cohort)
            + _quarantine_lines(cohort))


def _dice_lines(dice: Mapping[str, float | None]) -> list[str]:
    """Only where the model segments and the cohort has masks."""
    if not dice:
        return []
    scores = ", ".join(f"{name} {_fmt(value)}" for name, value in dice.items() if name != "n")
    return ["## Segmentation", "", f"Mean Dice of the final fit's segmentation on the {int(dice['n'])} patients "
            f"with a tumour mask: {scores}.", ""]


def _group_lines(groups: Sequence[Mapping[str, Any]]) -> list[str]:
    if not groups:
        return []
    lines = ["## By scanner", "", "| scanner | n | mutant | AUC [95 % CI] | accuracy |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {g['scanner']} | {g['n']} | {g['mutant']} | {_fmt(g['auc'])} [{_fmt(g['auc_ci'][0])}, "
              f"{_fmt(g['auc_ci'][1])}] | {g['accuracy']:.3f} |" for g in groups]
    return lines + [""]


def _guard_lines(cohort: ExternalCohort) -> list[str]:
    lines = ["## Leakage guard", "",
             f"Every external patient was compared by image content with the {cohort.compared_with} internal patients "
             f"(train, validation and test): {len(cohort.duplicates)} duplicate(s) excluded at similarity >= "
             f"{cohort.threshold:.2f}; the most similar patient kept scored {_fmt(cohort.closest_kept)}.", ""]
    if cohort.duplicates:
        lines += ["| external patient | matches internal patient | similarity |", "| --- | --- | --- |"]
        lines += [f"| {pid} | {match} | {_fmt(sim)} |" for pid, match, sim in cohort.duplicates]
        lines.append("")
    return lines


def _quarantine_lines(cohort: ExternalCohort) -> list[str]:
    if not cohort.quarantined:
        return []
    lines = [f"## Quarantined ({len(cohort.quarantined)})", "", "| patient | reason |", "| --- | --- |"]
    return lines + [f"| {pid} | {reason.replace('|', '/')} |" for pid, reason in cohort.quarantined] + [""]


def predictions_csv(cohort: ExternalCohort) -> str:
    """Every external patient: scored rows (both models' probabilities, the headline's call, the
    site facts), then the quarantined ones with their reason."""
    headline, others = cohort.models[cohort.headline], [m for n, m in cohort.models.items() if n != cohort.headline]
    columns = ["patient_id", "label", "prob_mutant", "predicted", *(f"prob_mutant_{m.name}" for m in others),
               *SITE_COLUMNS, "status", "reason"]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    predicted = predict_labels(headline.probs, headline.threshold)
    for i, pid in enumerate(cohort.patient_ids):
        facts = cohort.sites.get(pid, {})
        writer.writerow([pid, int(cohort.labels[i]), f"{headline.probs[i]:.6f}", int(predicted[i]),
                         *(f"{m.probs[i]:.6f}" for m in others), *(facts.get(c, "") for c in SITE_COLUMNS),
                         "scored", ""])
    for pid, reason in cohort.quarantined:
        facts = cohort.sites.get(pid, {})
        writer.writerow([pid, "", "", "", *("" for _ in others), *(facts.get(c, "") for c in SITE_COLUMNS),
                         "quarantined", reason])
    return buffer.getvalue()


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def _fmt(value: Any) -> str:
    return "n/a" if _number(value) is None else f"{value:.3f}"
