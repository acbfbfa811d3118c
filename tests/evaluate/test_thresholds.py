import numpy as np
import pytest

from idhhpc.evaluate.metrics import compute_metrics
from idhhpc.evaluate.thresholds import choose_threshold

# Scores 0.1..0.8 with labels 0 0 1 0 1 1 0 1. Mutant F1 when predicting mutant at prob >= t:
# t=0.8: 0.40, 0.7: 0.33, 0.6: 0.57, 0.5: 0.75, 0.4: 0.67, 0.3: 0.80 (best), 0.2: 0.73, 0.1: 0.67.
# Youden J at the same thresholds: 0.25, 0, 0.25, 0.5, 0.25, 0.5, 0.25, 0 (tie 0.5 vs 0.3).
PROB = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8])
Y_TRUE = np.array([0, 0, 1, 0, 1, 1, 0, 1])


def test_f1_threshold_is_the_known_best():
    threshold = choose_threshold(Y_TRUE, PROB, method="f1")
    assert threshold == pytest.approx(0.3)
    assert compute_metrics(Y_TRUE, PROB, threshold)["f1_mutant"] == pytest.approx(0.8)


def test_f1_is_the_default_method():
    assert choose_threshold(Y_TRUE, PROB) == pytest.approx(0.3)


def test_youden_tie_goes_to_the_higher_threshold():
    assert choose_threshold(Y_TRUE, PROB, method="youden") == pytest.approx(0.5)


def test_youden_picks_the_unique_maximum():
    # labels 0 0 1 0 0 1 1 1: J = 0.25, 0.5, 0.75 (t=0.6), 0.5, 0.25, 0.5, 0.25 going down from 0.8
    y_true = np.array([0, 0, 1, 0, 0, 1, 1, 1])
    threshold = choose_threshold(y_true, PROB, method="youden")
    assert threshold == pytest.approx(0.6)
    metrics = compute_metrics(y_true, PROB, threshold)
    assert metrics["sensitivity"] + metrics["specificity"] - 1 == pytest.approx(0.75)


def test_perfect_separation_gives_a_separating_threshold():
    y_true = np.array([0, 0, 0, 1, 1])
    prob = np.array([0.05, 0.2, 0.3, 0.7, 0.9])
    for method in ("f1", "youden"):
        assert compute_metrics(y_true, prob, choose_threshold(y_true, prob, method))["accuracy"] == 1.0


@pytest.mark.parametrize("label", [0, 1])
def test_one_class_falls_back_to_one_half_with_a_warning(label):
    with pytest.warns(RuntimeWarning, match="one class"):
        assert choose_threshold(np.full(4, label), [0.1, 0.4, 0.6, 0.9]) == 0.5


def test_unknown_method_is_rejected():
    with pytest.raises(ValueError, match="youden"):
        choose_threshold(Y_TRUE, PROB, method="accuracy")
