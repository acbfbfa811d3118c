"""The engine with the project's own 3D EfficientNet (b0, 32³): trains, and resumes exactly."""

import pytest
import torch

from idhhpc import model as model_module
from idhhpc.config import TrainConfig
from idhhpc.train.stopping import StopRequest, TrainingInterrupted
from idhhpc.train.trainer import train
from tests.support.toy import make_toy_dataset

SETTINGS = TrainConfig(epochs=1, micro_batch=2, accumulate=2, num_workers=0, max_lr=1e-3)


def _run(run_dir, init_seed=0, stop=None):
    torch.manual_seed(init_seed)
    model = model_module.build_model("b0", in_channels=4, trainable_stages=1)
    train_ds = make_toy_dataset(6, size=32, seed=1)
    val_ds = make_toy_dataset(2, size=32, seed=2, mutant_share=0.5)
    return train(model, train_ds, val_ds, SETTINGS, run_dir, stop=stop)


def test_efficientnet_b0_resumes_bitwise_after_mid_window_stop(tmp_path):
    reference = _run(tmp_path / "reference")
    with pytest.raises(TrainingInterrupted):
        _run(tmp_path / "resumed", stop=StopRequest(at_micro_step=1))
    resumed = _run(tmp_path / "resumed", init_seed=5)
    assert resumed.history == reference.history
    ref = torch.load(reference.last_checkpoint, map_location="cpu", weights_only=True)["model"]
    got = torch.load(resumed.last_checkpoint, map_location="cpu", weights_only=True)["model"]
    assert all(torch.equal(ref[k], got[k]) for k in ref)
    torch.manual_seed(0)
    initial = model_module.build_model("b0", in_channels=4, trainable_stages=1).state_dict()
    assert torch.equal(ref["net._conv_stem.weight"], initial["net._conv_stem.weight"]), "frozen stem must not change"
    assert not torch.equal(ref["net._fc.weight"], initial["net._fc.weight"]), "the head must train"
