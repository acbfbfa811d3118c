"""The frozen-prefix feature cache: training from it is training through the network (no
augmentation), it is verified and rebuilt like every stage output, and jobs without a frozen
pretrained prefix skip it. b0 at 32³ with generated pretrained weights, on the CPU."""

from __future__ import annotations

import shutil

import h5py
import numpy as np
import pytest
import torch

from idhhpc.data.dataset import ShardDataset
from idhhpc.data.feature_cache import FeatureDataset
from idhhpc.data.splits import load_splits
from idhhpc.model.network import build_network
from idhhpc.predictor import Predictor
from idhhpc.stages.features import feature_tasks, outputs_verify, run_features
from idhhpc.train.fitting import training_config_hash
from idhhpc.train.prefix_cache import (
    build_cache,
    cache_folder,
    training_inputs,
    usable_cache,
)
from idhhpc.train.trainer import train
from idhhpc.tune.folds import tuning_folds
from idhhpc.tune.lockstep import LockstepCV
from idhhpc.tune.trainable import build_cv, trial_job
from idhhpc.workdir import WorkDir
from tests.support.jobs import tiny_config
from tests.support.pipeline import run_in_process
from tests.support.pretrained import write_2d_weights

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def one_thread():
    """Equivalence is to float rounding, and the rounding of a convolution depends on how its
    reduction is split over threads; an earlier in-process test may have changed the count, so
    every comparison here runs both sides on one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


CPU = ["train.augment=false", "train.amp='off'", "train.device=cpu", "train.micro_batch=2", "train.accumulate=2"]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """Shards and splits of the tiny phantom cohort, and a generated 2D b0 weights file."""
    root = tmp_path_factory.mktemp("prefix-cache")
    run_in_process(tiny_config(root / "work", root / "cohort"), ["cohort", "preprocess", "split"])
    return root


def _job(prepared, tmp_path, *overrides):
    """The tiny job on a private copy of the prepared work dir, with pretrained weights (so the
    study's freezing: stem and stages 1-5 frozen)."""
    work = tmp_path / "work"
    if not work.exists():
        shutil.copytree(prepared / "work", work)
    weights = tmp_path / "b0-2d.pt"
    if not weights.exists():
        write_2d_weights(weights, "b0", seed=7)
    return tiny_config(work, prepared / "cohort", f"model={{variant: b0, pretrained: {weights}}}", *CPU, *overrides)


def _features(folder):
    with h5py.File(folder / "features-00000.h5", "r") as h5:
        return h5["features"][:]


def test_training_from_the_cache_equals_training_through_the_network(prepared, tmp_path):
    config = _job(prepared, tmp_path, "train.epochs=3")
    build_cache(config)
    fit = load_splits(config)["folds"][0]  # a validation split holding both classes
    index = WorkDir(config.work_dir).index
    network = build_network(config)
    initial = {k: v.clone() for k, v in network.state_dict().items()}
    through = train(network, ShardDataset(index, fit["train"]), ShardDataset(index, fit["val"]), config.train,
                    tmp_path / "full", seed=config.seed)
    tail, train_ds, val_ds = training_inputs(config, fit["train"], fit["val"])
    assert isinstance(train_ds, FeatureDataset) and tail.feature_input
    cached = train(tail, train_ds, val_ds, config.train, tmp_path / "cached", seed=config.seed)
    trained = network.state_dict()
    assert not torch.equal(trained["net._fc.weight"], initial["net._fc.weight"])
    assert torch.equal(trained["net._blocks.0.0._depthwise_conv.weight"], initial["net._blocks.0.0._depthwise_conv.weight"])
    for key, value in tail.state_dict().items():
        torch.testing.assert_close(value, trained[key], rtol=1e-4, atol=1e-5, msg=key)
    labels = [int(ShardDataset(index, fit["val"])[i]["label"]) for i in range(len(fit["val"]))]
    one_pair = 1 / (sum(labels) * (len(labels) - sum(labels)))
    for full_epoch, cached_epoch in zip(through.history, cached.history, strict=True):
        # After 3 epochs on a dozen patients some validation probabilities agree to 1e-6, so float
        # rounding may swap one such pair; the continuous validation loss is the strict check.
        assert abs(cached_epoch["val/auc"] - full_epoch["val/auc"]) <= one_pair + 1e-9 and full_epoch["val/auc"] > 0
        assert cached_epoch["val/loss"] == pytest.approx(full_epoch["val/loss"], rel=1e-4)
        assert cached_epoch["train/loss"] == pytest.approx(full_epoch["train/loss"], rel=1e-4)


def test_lockstep_cv_from_the_cache_matches_the_network(prepared, tmp_path):
    config = _job(prepared, tmp_path, "tune.epochs=2")
    build_cache(config)
    job = trial_job(config, {"max_lr": 3e-3})
    folds = tuning_folds(load_splits(job), None)
    through = LockstepCV(build_network(job), folds, WorkDir(job.work_dir).index, job.train, job.seed)
    cached = build_cv(job, folds)
    assert cached.features == cache_folder(job)
    for _ in range(2):
        expected, actual = through.epoch(), cached.epoch()
        assert actual == pytest.approx(expected, rel=1e-4, abs=1e-9)


def test_stage_output_is_verified_rebuilt_when_corrupt_and_recomputed_for_new_weights(prepared, tmp_path):
    config = _job(prepared, tmp_path)
    assert feature_tasks(config) == [()] and not outputs_verify(config)
    run_features(config)
    folder = cache_folder(config)
    assert outputs_verify(config)
    original = _features(folder)
    shard = folder / "features-00000.h5"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    assert not outputs_verify(config)
    run_features(config)
    assert outputs_verify(config)
    np.testing.assert_array_equal(_features(folder), original)

    write_2d_weights(tmp_path / "b0-2d.pt", "b0", seed=8)  # the same file, other weights
    assert cache_folder(config) != folder and not outputs_verify(config)
    assert usable_cache(config) is None  # no cache for these weights: train through the network
    run_features(config)
    assert outputs_verify(config) and not folder.exists()
    assert not np.allclose(_features(cache_folder(config)), original)


@pytest.mark.parametrize("overrides", [
    ["model={variant: b0}"],  # no pretrained weights: every stage trains
    ["model.trainable_stages=-1"],  # pretrained, but nothing frozen
    ["cache.enabled=false"],
])
def test_a_job_without_a_frozen_pretrained_prefix_skips_the_stage(prepared, tmp_path, overrides):
    config = _job(prepared, tmp_path, *overrides)
    assert feature_tasks(config) == [] and outputs_verify(config) and usable_cache(config) is None
    network, train_ds, _ = training_inputs(config, load_splits(config)["fit"]["train"], [])
    assert isinstance(train_ds, ShardDataset) and not network.feature_input
    # checkpoints of such a job are tied to the same config hash whatever the cache section says
    assert training_config_hash(_job(prepared, tmp_path, *overrides, "cache.views=3")) == training_config_hash(config)


def test_the_cache_settings_of_a_frozen_pretrained_job_are_part_of_its_training_hash(prepared, tmp_path):
    config = _job(prepared, tmp_path)
    assert training_config_hash(_job(prepared, tmp_path, "cache.views=3")) != training_config_hash(config)


def test_augmented_views_are_computed_once_and_an_epoch_draws_one(prepared, tmp_path):
    config = _job(prepared, tmp_path, "train.augment=true", "cache.views=2")
    folder = build_cache(config)
    ids = load_splits(config)["fit"]["train"]
    plain = FeatureDataset(folder, ids, augment=False, seed=config.seed)
    drawn = FeatureDataset(folder, ids, augment=True, seed=config.seed)
    network = build_network(config).eval()
    volume = ShardDataset(WorkDir(config.work_dir).index, ids)[0]["image"]
    with torch.no_grad():
        torch.testing.assert_close(plain[0]["image"], network.prefix(volume[None])[0], rtol=1e-4, atol=1e-5)
    seen = {}
    for epoch in range(6):
        drawn.set_epoch(epoch)
        view = drawn[(0, 0)]["image"]
        seen[view.numpy().tobytes()] = view
        assert torch.equal(drawn[0]["image"], plain[0]["image"])  # validation reads the plain view
    assert len(seen) == 2 and not any(torch.equal(view, plain[0]["image"]) for view in seen.values())


def test_fit_stage_trains_the_tail_from_the_cache_and_exports_the_whole_network(prepared, tmp_path, caplog):
    config = _job(prepared, tmp_path, "train.epochs=1")
    caplog.set_level("INFO", logger="idhhpc.train.prefix_cache")
    run_in_process(config, ["features", "fit"])
    assert any("training the tail from the feature cache" in m for m in caplog.messages)
    predictor = Predictor.load(WorkDir(config.work_dir).exported_model("fit"), "cpu")
    assert not predictor.model.feature_input
    val = ShardDataset(WorkDir(config.work_dir).index, load_splits(config)["fit"]["val"])
    probs = predictor.predict_proba(val)
    assert probs.shape == (len(val),) and np.isfinite(probs).all()


def test_the_cache_key_follows_what_the_stored_views_depend_on(prepared, tmp_path):
    folders = {cache_folder(_job(prepared, tmp_path, *extra)) for extra in (
        [], ["train.augment=flips"], ["train.augment=full"], ["seed=1"], ["cache.dtype=float16"],
        ["model.trainable_stages=1"])}
    assert len(folders) == 6
    assert cache_folder(_job(prepared, tmp_path, "train.max_lr=0.01")) == cache_folder(_job(prepared, tmp_path))
