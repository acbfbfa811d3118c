"""Test-set evaluation: threshold choice, metrics, bootstrap CIs, figures and the report."""

from idhhpc.evaluate.bootstrap import bootstrap_ci
from idhhpc.evaluate.metrics import compute_metrics
from idhhpc.evaluate.outputs import evaluate_predictions
from idhhpc.evaluate.reference import STUDY_REFERENCE
from idhhpc.evaluate.thresholds import choose_threshold

__all__ = ["STUDY_REFERENCE", "bootstrap_ci", "choose_threshold", "compute_metrics", "evaluate_predictions"]
