"""BatchNorm calibration turns a randomly initialised, frozen backbone into usable features."""

from __future__ import annotations

import torch

from idhhpc.model.calibrate import calibrate_batchnorm
from idhhpc.model.network import build_model


def spread_of_logits(model, inputs):
    model.eval()
    with torch.no_grad():
        return model(inputs).std(dim=0).max().item()


def test_calibration_makes_eval_outputs_depend_on_the_input():
    torch.manual_seed(0)
    model = build_model("b0", trainable_stages=2)
    inputs = torch.randn(6, 4, 32, 32, 32) * torch.linspace(0.5, 2.0, 6).view(6, 1, 1, 1, 1)
    before = spread_of_logits(model, inputs)
    seen = calibrate_batchnorm(model, inputs.split(2))
    after = spread_of_logits(model, inputs)
    assert seen == 6
    assert after > 100 * before, (before, after)


def test_calibration_restores_momentum_and_mode():
    model = build_model("b0", trainable_stages=2, bn_momentum=0.1)
    model.train()
    calibrate_batchnorm(model, [torch.randn(2, 4, 32, 32, 32)])
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm3d)]
    assert all(m.momentum == 0.1 for m in norms)
    assert model.training and not model.net._bn0.training  # frozen stem stays in eval
    assert not torch.allclose(model.net._bn0.running_var, torch.ones_like(model.net._bn0.running_var))
