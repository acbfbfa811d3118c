"""Cross-validation in lockstep: a shared frozen prefix, independent tails, exact resume, no test patients."""

from __future__ import annotations

import pytest
import torch

from idhhpc.data.splits import load_splits
from idhhpc.model.network import build_model
from idhhpc.tune.folds import TestSplitLeak, tuning_folds
from idhhpc.tune.shared import (
    frozen_tensors,
    parameter_bytes,
    shared_prefix_copies,
    tail_state,
)
from idhhpc.tune.trainable import build_cv, trial_job
from tests.support.jobs import tiny_job


def test_copies_share_the_frozen_prefix_and_own_their_tails():
    model = build_model("b0", trainable_stages=2)
    models = shared_prefix_copies(model, 3)
    prefix = [{t.data_ptr() for t in frozen_tensors(m)} for m in models]
    assert prefix[0] == prefix[1] == prefix[2] and prefix[0]
    tails = [{t.data_ptr() for t in m.parameters() if t.requires_grad} for m in models]
    assert not tails[0] & tails[1] and not tails[1] & tails[2]
    with torch.no_grad():
        next(p for p in models[1].parameters() if p.requires_grad).add_(1.0)
    assert not torch.equal(*(next(p for p in m.parameters() if p.requires_grad) for m in models[:2]))
    assert all(not m.frozen_modules()[0].training for m in models)


def test_sharing_saves_the_prefix_bytes_of_k_minus_one_models():
    model = build_model("b0", trainable_stages=1)
    single = parameter_bytes([model])
    prefix = sum(t.untyped_storage().nbytes() for t in frozen_tensors(model))
    shared = parameter_bytes(shared_prefix_copies(model, 4))
    independent = 4 * single
    assert shared == independent - 3 * prefix
    assert shared < 0.5 * independent


def test_tail_state_leaves_out_the_prefix():
    model = build_model("b0", trainable_stages=1)
    tail = tail_state(model)
    assert tail and not any(name.startswith(("net._conv_stem", "net._bn0", "net._blocks.0.")) for name in tail)
    assert any(name.startswith("net._fc") for name in tail)


def test_tuning_folds_refuse_test_patients(workspace):
    splits = load_splits(tiny_job(workspace))
    assert len(tuning_folds(splits, None)) == 2
    leaky = {**splits, "folds": [{"train": splits["folds"][0]["train"] + splits["test"][:1],
                                  "val": splits["folds"][0]["val"]}, splits["folds"][1]]}
    with pytest.raises(TestSplitLeak, match="fold 0 train holds 1 test patients"):
        tuning_folds(leaky, None)
    with pytest.raises(ValueError, match="tune.folds=3"):
        tuning_folds(splits, 3)


def test_trial_checks_its_folds_against_splits_json(workspace):
    """Whoever computed the folds, the trial itself refuses a test patient."""
    config = tiny_job(workspace)
    splits = load_splits(config)
    folds = tuning_folds(splits, None)
    folds[1]["val"] = folds[1]["val"] + [splits["test"][0]]
    with pytest.raises(TestSplitLeak, match="fold 1 val"):
        build_cv(trial_job(config, {}), folds)


def test_every_fold_validates_each_epoch_and_resume_is_exact(workspace):
    config = tiny_job(workspace, "train.augment=true")
    job = trial_job(config, {"max_lr": 3e-3, "focal_gamma": 1.0})
    folds = tuning_folds(load_splits(config), None)
    straight = build_cv(job, folds)
    first = straight.epoch()
    assert {"val_auc_mean", "val_auc_std", "val_auc_fold0", "val_auc_fold1"} <= set(first)
    torch.save(straight.state_dict(), workspace / "cv.pt")
    second = straight.epoch()
    resumed = build_cv(job, folds)
    resumed.load_state_dict(torch.load(workspace / "cv.pt", weights_only=True))
    assert resumed.epochs_done == 1
    again = resumed.epoch()
    assert again["epoch"] == second["epoch"] == 1
    assert again["train_loss_mean"] == pytest.approx(second["train_loss_mean"], rel=1e-5)
    assert again["val_auc_mean"] == pytest.approx(second["val_auc_mean"])
