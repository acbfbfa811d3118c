import math

import numpy as np
import pytest

from idhhpc.evaluate.metrics import METRIC_KEYS, compute_metrics

# 6 wildtype, 4 mutant; at threshold 0.5: tn=4, fp=2 (0.6, 0.7), fn=1 (0.35), tp=3.
Y_TRUE = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 1])
PROB = np.array([0.1, 0.2, 0.3, 0.4, 0.6, 0.7, 0.35, 0.8, 0.9, 0.95])

EXPECTED = {
    "tn": 4, "fp": 2, "fn": 1, "tp": 3,
    "accuracy": 7 / 10,
    "precision_mutant": 3 / 5, "recall_mutant": 3 / 4, "f1_mutant": 6 / 9,
    "precision_wildtype": 4 / 5, "recall_wildtype": 4 / 6, "f1_wildtype": 8 / 11,
    "sensitivity": 3 / 4, "specificity": 4 / 6,
    "balanced_accuracy": (3 / 4 + 4 / 6) / 2,
    "precision_macro": (4 / 5 + 3 / 5) / 2, "recall_macro": (4 / 6 + 3 / 4) / 2, "f1_macro": (8 / 11 + 6 / 9) / 2,
    "precision_weighted": (6 * 4 / 5 + 4 * 3 / 5) / 10,
    "recall_weighted": (6 * 4 / 6 + 4 * 3 / 4) / 10,
    "f1_weighted": (6 * 8 / 11 + 4 * 6 / 9) / 10,
    "mcc": (3 * 4 - 2 * 1) / math.sqrt(5 * 4 * 6 * 5),
    "auc": 21 / 24,  # 0.35 outranks 3 of 6 negatives, the other positives outrank all 6
    "pr_auc": (1 + 1 + 1 + 4 / 7) / 4,  # precision at each positive, ranked by score
    "brier": (0.01 + 0.04 + 0.09 + 0.16 + 0.36 + 0.49 + 0.65**2 + 0.04 + 0.01 + 0.0025) / 10,
}  # fmt: skip


def test_metrics_match_hand_computed_confusion_matrix():
    metrics = compute_metrics(Y_TRUE, PROB, threshold=0.5)
    assert set(metrics) == set(METRIC_KEYS) == set(EXPECTED)
    for key, expected in EXPECTED.items():
        assert metrics[key] == pytest.approx(expected), key
    assert all(isinstance(value, float) for value in metrics.values())


def test_keys_used_by_mlflow_are_present():
    metrics = compute_metrics(Y_TRUE, PROB, threshold=0.5)
    for key in ("auc", "f1_weighted", "f1_mutant", "accuracy", "precision_weighted", "recall_weighted"):
        assert key in metrics


def test_threshold_is_inclusive():
    metrics = compute_metrics(Y_TRUE, PROB, threshold=0.6)
    assert metrics["fp"] == 2  # prob 0.6 counts as predicted mutant


@pytest.mark.parametrize("label", [0, 1])
def test_one_class_input_gives_nan_for_undefined_metrics(label):
    y_true = np.full(5, label)
    metrics = compute_metrics(y_true, np.linspace(0.1, 0.9, 5), threshold=0.5)
    for key in ("auc", "pr_auc", "mcc", "balanced_accuracy"):
        assert math.isnan(metrics[key])
    assert 0 <= metrics["accuracy"] <= 1
    assert metrics["tn"] + metrics["fp"] + metrics["fn"] + metrics["tp"] == 5


def test_no_predicted_mutant_leaves_mutant_precision_undefined():
    metrics = compute_metrics(Y_TRUE, PROB, threshold=0.99)
    assert math.isnan(metrics["precision_mutant"])
    assert metrics["recall_mutant"] == 0.0
    assert metrics["precision_macro"] == pytest.approx(metrics["precision_wildtype"])


@pytest.mark.parametrize(
    ("y_true", "prob", "message"),
    [
        ([0, 2], [0.1, 0.2], "only 0"),
        ([0, 1], [0.1, 1.2], r"\[0, 1\]"),
        ([0, 1], [0.1, float("nan")], "finite"),
        ([0, 1, 1], [0.1, 0.2], "entries"),
        ([], [], "empty"),
    ],
)
def test_bad_inputs_are_rejected_with_a_reason(y_true, prob, message):
    with pytest.raises(ValueError, match=message):
        compute_metrics(y_true, prob, threshold=0.5)
