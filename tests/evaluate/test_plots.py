import numpy as np
import pytest

from idhhpc.evaluate import plots
from idhhpc.evaluate.bootstrap import bootstrap_ci
from idhhpc.evaluate.metrics import compute_metrics

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
Y_TRUE = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 1])
PROB = np.array([0.1, 0.2, 0.3, 0.4, 0.6, 0.7, 0.35, 0.8, 0.9, 0.95])


def _is_png(path) -> bool:
    return path.read_bytes()[:8] == PNG_MAGIC


@pytest.mark.parametrize("plot", [plots.plot_roc, plots.plot_precision_recall, plots.plot_confusion_matrix])
def test_curve_and_matrix_plots_write_png(tmp_path, plot):
    path = plot(Y_TRUE, PROB, 0.5, tmp_path / "figure.png")
    assert path == tmp_path / "figure.png" and _is_png(path)
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def test_per_class_plot_tolerates_undefined_values(tmp_path):
    metrics = compute_metrics(Y_TRUE, PROB, threshold=0.99)  # precision_mutant is NaN
    intervals = bootstrap_ci(Y_TRUE, PROB, 0.99, n_resamples=50)
    assert _is_png(plots.plot_per_class_metrics(metrics, intervals, tmp_path / "bars.png"))


def test_history_plot_has_one_panel_per_quantity_and_handles_missing_values(tmp_path):
    history = [{"epoch": e, "train/loss": 1 / (e + 1), "val/loss": 1.2 / (e + 1), "lr": 1e-3,
                "optimizer_step": 36 * (e + 1)} for e in range(4)]
    history[2]["val/auc"] = 0.7
    assert plots._history_panels(history) == {"loss": ["train/loss", "val/loss"], "auc": ["val/auc"], "lr": ["lr"]}
    assert _is_png(plots.plot_history(history, tmp_path / "history.png"))


def test_history_without_series_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="nothing to plot"):
        plots.plot_history([{"epoch": 0}, {"epoch": 1}], tmp_path / "history.png")
