import math

import pytest
import torch

from idhhpc.config import TrainConfig
from idhhpc.train.loss import make_loss


def _focal_by_hand(logits: torch.Tensor, labels: torch.Tensor, gamma: float, alpha: float) -> float:
    total = 0.0
    for row, label in zip(logits.tolist(), labels.tolist()):
        p_t = math.exp(row[label]) / sum(math.exp(v) for v in row)
        alpha_t = alpha if label == 1 else 1 - alpha
        total += -alpha_t * (1 - p_t) ** gamma * math.log(p_t)
    return total / len(labels)


@pytest.mark.parametrize("gamma,alpha", [(2.0, 0.75), (0.0, 0.5), (1.5, 0.25)])
def test_focal_loss_matches_formula(gamma, alpha):
    logits = torch.tensor([[2.0, -1.0], [0.3, 0.1], [-1.0, 3.0], [0.5, 0.5], [4.0, -2.0]])
    labels = torch.tensor([0, 1, 1, 0, 1])
    loss = make_loss(TrainConfig(loss="focal", focal_gamma=gamma, focal_alpha=alpha))(logits, labels)
    assert loss.item() == pytest.approx(_focal_by_hand(logits, labels, gamma, alpha), rel=1e-5)


def test_focal_alpha_weights_mutant_class_more():
    loss = make_loss(TrainConfig(focal_alpha=0.75, focal_gamma=0.0))
    logits = torch.zeros(1, 2)
    mutant, wildtype = loss(logits, torch.tensor([1])), loss(logits, torch.tensor([0]))
    assert mutant.item() == pytest.approx(3 * wildtype.item())


def test_focal_with_gamma_zero_and_no_alpha_is_cross_entropy():
    logits = torch.randn(6, 2, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 1, 0, 1, 1, 0])
    focal = make_loss(TrainConfig(focal_gamma=0.0, focal_alpha=None))(logits, labels)
    ce = make_loss(TrainConfig(loss="ce"))(logits, labels)
    assert focal.item() == pytest.approx(ce.item(), rel=1e-6)


def test_focal_loss_has_gradients():
    logits = torch.randn(4, 2, requires_grad=True)
    make_loss(TrainConfig())(logits, torch.tensor([0, 1, 1, 0])).backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_loss_balancing_weights_classes_by_inverse_frequency():
    labels = [0, 0, 0, 1]  # one mutant in four: its gradient weighs 3x a wildtype's
    for loss in ("ce", "focal"):
        logits = torch.zeros(2, 2, requires_grad=True)
        make_loss(TrainConfig(loss=loss, focal_gamma=0.0, balance="loss"), labels)(logits, torch.tensor([1, 0])).backward()
        mutant, wildtype = logits.grad.abs().sum(dim=1)
        assert mutant.item() == pytest.approx(3 * wildtype.item(), rel=1e-5)


def test_sampler_balancing_leaves_the_loss_unweighted():
    fn = make_loss(TrainConfig(loss="ce", balance="sampler"), [0, 0, 0, 1])
    logits = torch.zeros(1, 2)
    assert fn(logits, torch.tensor([1])).item() == pytest.approx(fn(logits, torch.tensor([0])).item())


def test_one_balancing_mechanism_by_default():
    settings = TrainConfig()
    assert settings.balance == "sampler" and settings.focal_alpha is None
