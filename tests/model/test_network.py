"""Freezing, explain mode, checkpointing and parameter helpers of the 3D EfficientNet."""

import pytest
import torch
from torch import nn

from idhhpc.explain.gradcam import default_cam_layer
from idhhpc.model import (
    build_model,
    count_parameters,
    parameter_groups,
    trainable_parameters,
    variant_name,
)
from idhhpc.model.memory import SavedTensorCounter, saved_bytes_for_backward

SHAPE = (2, 4, 32, 32, 32)
ONE_VOLUME = (1, 4, 32, 32, 32)


def _volume(seed: int = 0, shape=SHAPE) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def test_variant_names_accept_short_and_monai_spelling():
    assert variant_name("b7") == variant_name("efficientnet-b7") == "efficientnet-b7"
    assert build_model("efficientnet-b0").variant == "efficientnet-b0"


@pytest.mark.parametrize("bad", ["b8", "efficientnet-l2", "resnet50", ""])
def test_unknown_variant_fails_clearly(bad):
    with pytest.raises(ValueError, match="unknown EfficientNet variant"):
        build_model(bad)


def test_freezing_reduces_trainable_parameters():
    frozen, full = build_model("b0", trainable_stages=2), build_model("b0", trainable_stages=-1)
    head_only = build_model("b0", trainable_stages=0)
    assert count_parameters(full)["trainable"] == count_parameters(full)["total"]
    assert count_parameters(head_only)["trainable"] < count_parameters(frozen)["trainable"]
    assert count_parameters(frozen)["trainable"] < count_parameters(frozen)["total"]
    assert not any(p.requires_grad for p in frozen.net._blocks[0].parameters())
    assert all(p.requires_grad for p in frozen.net._blocks[-1].parameters())
    assert all(p.requires_grad for p in head_only.net._fc.parameters())


def test_frozen_batchnorm_stays_in_eval_and_keeps_its_statistics():
    model = build_model("b0", trainable_stages=2).train()
    frozen_bn, trainable_bn = model.net._bn0, model.net._bn1
    before = frozen_bn.running_mean.clone()
    model(_volume())
    assert not frozen_bn.training and trainable_bn.training
    assert not model.net._blocks[0][0]._bn1.training
    assert torch.equal(frozen_bn.running_mean, before)


def _saved_bytes_before_stage(model: nn.Module, stage: int) -> tuple[int, int]:
    """Bytes saved for backward before ``net._blocks[stage]`` starts, and after the whole forward."""
    counter, snapshot = SavedTensorCounter(model), {}

    def record(_module, _inputs) -> None:
        snapshot["before"] = counter.bytes

    model.net._blocks[stage].register_forward_pre_hook(record)
    with counter.counting():
        model(_volume())
    return snapshot["before"], counter.bytes


def test_frozen_prefix_saves_nothing_for_backward():
    first_trainable = 5
    frozen = build_model("b0", trainable_stages=2)
    full = build_model("b0", trainable_stages=-1)
    frozen_prefix, frozen_total = _saved_bytes_before_stage(frozen, first_trainable)
    full_prefix, full_total = _saved_bytes_before_stage(full, first_trainable)
    assert frozen_prefix == 0 < full_prefix
    assert 0 < frozen_total < 0.2 * full_total
    head_only = saved_bytes_for_backward(build_model("b0", trainable_stages=0), _volume())
    assert head_only < frozen_total


def _output_of(model: nn.Module, layer: str, volume: torch.Tensor) -> torch.Tensor:
    captured = {}
    hook = dict(model.named_modules())[layer].register_forward_hook(
        lambda _module, _inputs, output: captured.setdefault("out", output)
    )
    try:
        logits = model(volume)
    finally:
        hook.remove()
    activation = captured["out"]
    if activation.requires_grad:
        activation.retain_grad()
    logits[:, 1].sum().backward()
    return activation


def test_gradients_reach_head_conv_but_not_frozen_layers():
    model = build_model("b0", trainable_stages=2)
    activation = _output_of(model, default_cam_layer(model), _volume())
    assert activation.grad is not None and activation.grad.abs().sum() > 0
    assert model.net._conv_head.weight.grad is not None
    assert model.net._conv_stem.weight.grad is None


def test_explain_mode_lets_gradients_reach_early_layers_without_updating_them():
    model = build_model("b0", trainable_stages=2)
    early = "net._blocks.0"
    assert not _output_of(model, early, _volume()).requires_grad
    model.zero_grad(set_to_none=True)
    with model.explain_mode():
        assert not model.training
        activation = _output_of(model, early, _volume(shape=ONE_VOLUME))
    assert activation.grad is not None and activation.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.net._blocks[0].parameters())
    assert model.training


def test_activation_checkpointing_gives_the_same_gradients():
    model = build_model("b0", trainable_stages=3).train()
    volume = _volume()
    grads = []
    for checkpointing in (False, True):
        model.activation_checkpointing = checkpointing
        model.zero_grad(set_to_none=True)
        torch.manual_seed(1)
        model(volume).square().sum().backward()
        grads.append([p.grad.clone() for p in trainable_parameters(model)])
    for plain, checkpointed in zip(*grads):
        torch.testing.assert_close(checkpointed, plain, rtol=1e-4, atol=1e-6)


def test_channels_last_gives_the_same_output():
    torch.manual_seed(3)
    plain = build_model("b0").eval()
    torch.manual_seed(3)
    channels_last = build_model("b0", channels_last=True).eval()
    assert channels_last.net._conv_stem.weight.is_contiguous(memory_format=torch.channels_last_3d)
    with torch.no_grad():
        torch.testing.assert_close(channels_last(_volume()), plain(_volume()), rtol=1e-4, atol=1e-5)


def test_parameter_groups_exempt_norms_and_biases_from_decay():
    model = build_model("b0", trainable_stages=2)
    decay, no_decay = parameter_groups(model, weight_decay=0.05)
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    no_decay_ids = {id(p) for p in no_decay["params"]}
    assert id(model.net._bn1.weight) in no_decay_ids and id(model.net._fc.bias) in no_decay_ids
    assert id(model.net._fc.weight) not in no_decay_ids
    grouped = len(decay["params"]) + len(no_decay["params"])
    assert grouped == len(trainable_parameters(model))
    torch.optim.AdamW(parameter_groups(model, 0.05), lr=1e-3)
