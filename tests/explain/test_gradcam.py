from __future__ import annotations

import contextlib
import copy

import numpy as np
import pytest
import torch
from torch import nn

from idhhpc.explain.gradcam import ZeroCamWarning, compute_cam
from idhhpc.model import network

from .conftest import SIZE


def _hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._backward_hooks) for m in model.modules())


def test_cam_shape_finite_and_normalised(tiny_net, image):
    result = compute_cam(tiny_net, image, "_conv_head")
    assert result.cam.shape == (SIZE, SIZE, SIZE)
    assert result.cam.dtype == np.float32
    assert np.isfinite(result.cam).all()
    assert result.cam.min() >= 0.0 and result.cam.max() == pytest.approx(1.0)
    assert 0.0 <= result.prob_mutant <= 1.0
    with torch.no_grad():
        logits = tiny_net(image[None])
    assert result.class_index == int(logits.argmax(1))
    assert result.prob_mutant == pytest.approx(float(torch.softmax(logits, 1)[0, 1]), abs=1e-5)


def test_frozen_backbone_still_gets_gradients_and_state_is_restored(tiny_net, image):
    model = copy.deepcopy(tiny_net).train()
    model.requires_grad_(False)
    for class_index in (0, 1):
        result = compute_cam(model, image, "_conv_head", class_index=class_index)
        assert result.class_index == class_index
        assert result.cam.max() == pytest.approx(1.0)
        assert result.cam.std() > 0
    assert model.training
    assert not any(p.requires_grad for p in model.parameters())
    assert _hook_count(model) == 0


class _NoGradPrefix(nn.Module):
    """Mimics IDHNet: stem and early blocks under no_grad unless ``explain_mode`` is active."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.explaining = False
        self.entered = 0

    @contextlib.contextmanager
    def explain_mode(self):
        self.entered += 1
        self.explaining = True
        try:
            yield self
        finally:
            self.explaining = False

    def forward(self, x):
        net = self.net
        with contextlib.nullcontext() if self.explaining else torch.no_grad():
            x = net._swish(net._bn0(net._conv_stem(net._conv_stem_padding(x))))
            x = net._blocks[:4](x)
        x = net._blocks[4:](x)
        x = net._swish(net._bn1(net._conv_head(net._conv_head_padding(x))))
        return net._fc(net._avg_pooling(x).flatten(1))


def test_layer_after_no_grad_prefix_needs_no_explain_mode(tiny_net, image):
    model = _NoGradPrefix(copy.deepcopy(tiny_net)).eval()
    model.requires_grad_(False)
    result = compute_cam(model, image, "net._conv_head", class_index=1)
    assert result.cam.max() == pytest.approx(1.0)
    assert model.entered == 0


def test_layer_inside_no_grad_prefix_uses_explain_mode(tiny_net, image):
    model = _NoGradPrefix(copy.deepcopy(tiny_net)).eval()
    model.requires_grad_(False)
    result = compute_cam(model, image, "net._blocks.2", class_index=1)
    assert model.entered == 1
    assert np.isfinite(result.cam).all() and result.cam.max() == pytest.approx(1.0)
    assert _hook_count(model) == 0


def test_gradcam_plus_plus(tiny_net, image):
    result = compute_cam(tiny_net, image, "_conv_head", class_index=1, method="gradcam++")
    assert result.cam.shape == (SIZE, SIZE, SIZE)
    assert np.isfinite(result.cam).all()
    assert 0.0 <= result.cam.min() and result.cam.max() <= 1.0 + 1e-6
    assert result.cam.max() > 0


def test_zero_gradient_gives_zero_cam_with_warning(tiny_net, image):
    model = copy.deepcopy(tiny_net)
    with torch.no_grad():
        model._fc.weight.zero_()
    with pytest.warns(ZeroCamWarning):
        result = compute_cam(model, image, "_conv_head", class_index=1)
    assert np.isfinite(result.cam).all() and not result.cam.any()
    assert result.prob_mutant == pytest.approx(0.5)


def test_unknown_layer_and_method_are_refused(tiny_net, image):
    with pytest.raises(KeyError, match="_conv_headd"):
        compute_cam(tiny_net, image, "_conv_headd")
    with pytest.raises(ValueError, match="scorecam"):
        compute_cam(tiny_net, image, "_conv_head", method="scorecam")


def test_build_model_with_frozen_stages(image):
    torch.manual_seed(0)
    model = network.build_model("b0", trainable_stages=2)
    result = compute_cam(model, image, "net._conv_head", class_index=1)
    assert result.cam.max() == pytest.approx(1.0) and np.isfinite(result.cam).all()
    assert model.training and not model.net._conv_stem.weight.requires_grad
    inside_frozen_prefix = compute_cam(model, image, "net._blocks.1", class_index=1)
    assert np.isfinite(inside_frozen_prefix.cam).all() and inside_frozen_prefix.cam.shape == (SIZE,) * 3
    assert model.training and not model._explaining
