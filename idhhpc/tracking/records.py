"""What the training, evaluate and explain runs record, and what their launch run repeats.

Files go to the run's root under fixed names (``report.html``, ``roc.png``, ``history.png``,
``gallery.html``...): MLflow's Compare page offers only root-level files common to every
selected run, side by side. Figures are also logged as keyed images, which the charts view
shows as image cards next to the metric charts. The launch run gets the headline metrics, the
final fit's training curves and the evaluation figures, so two launches compare directly by
their parent runs (which is all the runs table shows until a launch is expanded).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from idhhpc.config import JobConfig
from idhhpc.constants import (
    CLINICAL_FUSION_FILE,
    EXTERNAL_SUMMARY_FILE,
    METRICS_FILE,
    PREDICTIONS_FILE,
    REPORT_FILE,
    REPORT_HTML_FILE,
)
from idhhpc.evaluate.plots import plot_history
from idhhpc.tracking.metrics import (
    CAM_TABLE,
    LAUNCH_CURVES,
    METRICS_TABLE,
    cam_group_rows,
    cam_metrics,
    epoch_metrics,
    evaluation_metrics,
    launch_metrics,
    metric_rows,
)
from idhhpc.tracking.model import log_registered_model
from idhhpc.tracking.runs import launch_run, tracking_uri
from idhhpc.tracking.tracker import RunHandle

log = logging.getLogger(__name__)

HISTORY_FIGURE = "history.png"


def log_evaluation(run: RunHandle, config: JobConfig, reports: Path, cv_summary: Mapping[str, float],
                   export: Path | None = None) -> dict[str, float]:
    """Test metrics (and the CV summary) on the evaluate run and its launch run, the full metrics
    table, report and figures; ``export`` is logged and registered as the servable model."""
    document = json.loads((reports / METRICS_FILE).read_text())
    metrics = evaluation_metrics(document) | dict(cv_summary)
    run.log_metrics(metrics)
    run.log_table(metric_rows(document), METRICS_TABLE)
    figures = sorted(reports.glob("*.png"))
    files = [reports / name for name in (REPORT_HTML_FILE, REPORT_FILE, METRICS_FILE, PREDICTIONS_FILE)]
    fusion = reports / CLINICAL_FUSION_FILE  # only with evaluate.clinical
    _log_figures(run, figures, files + ([fusion] if fusion.is_file() else []))
    parent = launch_run(run, config)
    if parent is not None:
        parent.log_metrics(launch_metrics(metrics))
        _log_figures(parent, figures, [reports / REPORT_HTML_FILE])
    if export is not None:
        register_model(run, config, export)
    return metrics


def log_external(run: RunHandle, config: JobConfig, reports: Path, metrics: Mapping[str, float]) -> None:
    """An external cohort's metrics (``external/<name>/...``) on its run and on the launch run,
    beside the internal ``test/`` figures; its report, predictions and figures at the run's root."""
    run.log_metrics(dict(metrics))
    figures = sorted(reports.glob("*.png"))
    files = [reports / name for name in (REPORT_HTML_FILE, REPORT_FILE, METRICS_FILE, PREDICTIONS_FILE,
                                         EXTERNAL_SUMMARY_FILE)]
    _log_figures(run, figures, files)
    parent = launch_run(run, config)
    if parent is not None:
        parent.log_metrics(dict(metrics))


def log_explanation(run: RunHandle, config: JobConfig, result: Mapping[str, Any], patient_dirs: Sequence[Path]) -> None:
    """CAM statistics of all patients as metrics, per group as a table; galleries at the root."""
    summary = result["summary"]
    metrics = cam_metrics(summary)
    run.log_metrics(metrics)
    run.log_table(cam_group_rows(summary), CAM_TABLE)
    _log_files(run, [*result["galleries"], result["statistics"]])
    for folder in patient_dirs:
        run.log_artifact(folder, Path(folder).name)
    parent = launch_run(run, config)
    if parent is not None:
        parent.log_metrics(launch_metrics(metrics))


def epoch_logger(run: RunHandle, config: JobConfig, role: str) -> Callable[[int, Mapping[str, Any]], None]:
    """The trainer's ``on_epoch_end``: the epoch's metrics on the run and, for the final fit, on
    the launch run too (its curves are the launch's)."""
    parent = launch_run(run, config) if role == "fit" else None

    def log_epoch(epoch: int, record: Mapping[str, Any]) -> None:
        metrics = epoch_metrics(record)
        run.log_metrics(metrics, step=epoch)
        if parent is not None:
            parent.log_metrics({k: v for k, v in metrics.items() if k in LAUNCH_CURVES}, step=epoch)

    return log_epoch


def log_training_figure(run: RunHandle, history: Sequence[Mapping[str, float]], run_dir: Path) -> None:
    """``history.png`` (one panel per quantity) at the training run's root and as an image card."""
    if not history:
        return
    try:
        path = plot_history(history, run_dir / HISTORY_FIGURE)
    except ValueError as err:  # a history without series: nothing to draw, nothing to log
        log.warning("no training-history figure for %s: %s", run_dir.name, err)
        return
    _log_figures(run, [path])


def register_model(run: RunHandle, config: JobConfig, export: Path) -> None:
    """Log and register the servable model; needs the server now (a model is not spooled)."""
    run_id = run.run_id
    if run_id is None:
        log.warning("MLflow is unreachable: %s was not registered as an MLflow model", export)
        return
    try:
        version = log_registered_model(config, tracking_uri(config), run_id, export)
    except Exception as err:  # noqa: BLE001 - the export on disk stays usable; tracking must not fail the stage
        log.error("could not log or register %s as an MLflow model: %s", export, err)
        return
    run.set_tags({"idhhpc.registered_model": f"models:/{version.name}/{version.version}"})
    log.info("registered %s as models:/%s/%s", export, version.name, version.version)


def _log_files(run: RunHandle, paths: Sequence[Path]) -> None:
    for path in paths:
        if Path(path).is_file():
            run.log_artifact(path)


def _log_figures(run: RunHandle, figures: Sequence[Path], files: Sequence[Path] = ()) -> None:
    """Figures at the root and as image cards (keyed by file stem), other files at the root."""
    _log_files(run, [*figures, *files])
    for path in figures:
        run.log_image(path, key=Path(path).stem)
