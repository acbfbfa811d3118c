"""The micro-batch planner: measured memory decides the micro-batch, the model is left untouched."""

from __future__ import annotations

import pytest
import torch

from idhhpc.config import load_job
from idhhpc.model.memory import (
    GIB,
    StaticMemory,
    fit_to_memory_budget,
    plan_micro_batch,
)
from idhhpc.model.network import build_model


def _sample() -> torch.Tensor:
    return torch.randn(1, 4, 32, 32, 32, generator=torch.Generator().manual_seed(0))


def test_plan_keeps_the_effective_batch_and_fits_the_budget():
    model = build_model("b0", trainable_stages=-1)
    small = plan_micro_batch(model, _sample(), 8, budget_bytes=10 * GIB)
    assert small.micro_batch == 8 and small.accumulate == 1
    static = StaticMemory.of(model).total
    tight = static + 2 * small.per_sample_bytes + 1
    plan = plan_micro_batch(model, _sample(), 8, budget_bytes=tight)
    assert (plan.micro_batch, plan.accumulate) == (2, 4)
    with pytest.raises(ValueError, match="not even one volume fits"):
        plan_micro_batch(model, _sample(), 8, budget_bytes=static)


def test_planning_leaves_weights_statistics_and_mode_as_they_were():
    model = build_model("b0", trainable_stages=-1).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    plan_micro_batch(model, _sample(), 4, budget_bytes=10 * GIB)
    assert not model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_unset_budget_changes_nothing_and_a_set_one_replans():
    config = load_job(None, ["train.micro_batch=4", "train.accumulate=2", "train.device=cpu"])
    model = build_model("b0", trainable_stages=-1)
    dataset = [{"image": _sample()[0]}]
    assert fit_to_memory_budget(config, model, []) is config
    planned = fit_to_memory_budget(config.model_copy(update={"train": config.train.model_copy(
        update={"memory_budget_gb": 50.0})}), model, dataset)
    assert (planned.train.micro_batch, planned.train.accumulate) == (8, 1)
