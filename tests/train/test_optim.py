import pytest
import torch

from idhhpc.config import TrainConfig
from idhhpc.devices import resolve_amp
from idhhpc.train.optim import make_optimizer, make_scheduler, optimizer_steps_per_epoch
from tests.support.toy import TinyConvNet


def test_optimizer_steps_per_epoch_counts_partial_windows():
    assert optimizer_steps_per_epoch(10, micro_batch=3, accumulate=2) == 2
    assert optimizer_steps_per_epoch(16, micro_batch=2, accumulate=8) == 1
    assert optimizer_steps_per_epoch(17, micro_batch=2, accumulate=8) == 2


def test_onecycle_runs_all_steps_and_ends_at_min_lr():
    settings = TrainConfig(epochs=3, micro_batch=3, accumulate=2, max_lr=1e-2)
    model = torch.nn.Linear(2, 2)
    optimizer = make_optimizer(model, settings)
    scheduler = make_scheduler(optimizer, settings, n_samples=10)
    used = []
    for _ in range(settings.epochs * 2):
        used.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert 0.9 * settings.max_lr < max(used) <= settings.max_lr
    assert used[0] == pytest.approx(settings.max_lr / settings.div_factor)
    assert used[-1] == pytest.approx(settings.max_lr / (settings.div_factor * settings.final_div_factor))


def test_parameter_groups_skip_frozen_and_do_not_decay_norms_or_biases():
    model = TinyConvNet()
    model.features[0].requires_grad_(False)
    groups = make_optimizer(model, TrainConfig(weight_decay=0.1)).param_groups
    decayed = {id(p) for p in groups[0]["params"]}
    undecayed = {id(p) for p in groups[1]["params"]}
    assert groups[0]["weight_decay"] == 0.1 and groups[1]["weight_decay"] == 0.0
    assert id(model.features[3].weight) in decayed and id(model.head.weight) in decayed
    assert {id(model.features[4].weight), id(model.head.bias)} <= undecayed
    frozen = {id(p) for p in model.features[0].parameters()}
    assert not frozen & (decayed | undecayed)


def test_resolve_amp_policies():
    assert resolve_amp("auto", "cpu") == (None, False)
    assert resolve_amp("off", "cuda") == (None, False)
    assert resolve_amp("bf16", "cpu") == (torch.bfloat16, False)
    assert resolve_amp("fp16", "cuda") == (torch.float16, True)
    with pytest.raises(ValueError, match="amp"):
        resolve_amp("fp8", "cpu")
