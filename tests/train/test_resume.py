"""The key property: stopping anywhere and resuming gives bitwise the weights of an unbroken run."""


import pytest
import torch

from idhhpc.config import TrainConfig
from idhhpc.train.stopping import StopRequest, TrainingInterrupted
from idhhpc.train.trainer import train
from tests.support.toy import TinyConvNet, make_toy_dataset

# 9 samples / micro-batch 2 -> 5 micro-steps per epoch, windows of 2 -> 3 optimizer steps (last one short)
SETTINGS = TrainConfig(epochs=2, micro_batch=2, accumulate=2, max_lr=1e-2, num_workers=0, patience=5)


def _run(run_dir, settings=SETTINGS, init_seed=0, **kwargs):
    """``init_seed`` differs on resumed attempts: their weights must come from last.pt, not from init."""
    torch.manual_seed(init_seed)
    model = TinyConvNet(dropout=0.3)
    train_ds = make_toy_dataset(9, size=10, seed=1)
    val_ds = make_toy_dataset(6, size=10, seed=2, mutant_share=0.5)
    return train(model, train_ds, val_ds, settings, run_dir, **kwargs)


def _weights(path):
    return torch.load(path, weights_only=True)["model"]


def _assert_same_run(resumed, reference):
    assert resumed.history == reference.history
    ref, got = _weights(reference.last_checkpoint), _weights(resumed.last_checkpoint)
    assert ref.keys() == got.keys()
    assert all(torch.equal(ref[k], got[k]) for k in ref)
    assert resumed.best_val_probs == reference.best_val_probs


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("reference"))


@pytest.mark.parametrize("stops", [(5,), (4,), (3,), (3, 8)], ids=["before-validation", "optimizer-boundary",
                                                                 "mid-window", "twice"])
def test_resume_after_micro_step_interrupts_is_exact(tmp_path, reference, stops):
    for attempt, stop_at in enumerate(stops):
        with pytest.raises(TrainingInterrupted):
            _run(tmp_path, init_seed=100 * attempt, stop=StopRequest(at_micro_step=stop_at))
    _assert_same_run(_run(tmp_path, init_seed=7), reference)


def test_resume_between_epochs_is_exact(tmp_path, reference):
    def stop_after_first_epoch(epoch, metrics):
        if epoch == 0:
            stop.request()

    stop = StopRequest()
    with pytest.raises(TrainingInterrupted):
        _run(tmp_path, stop=stop, on_epoch_end=stop_after_first_epoch)
    _assert_same_run(_run(tmp_path, init_seed=3), reference)


def test_resume_with_worker_processes_is_exact(tmp_path, reference):
    with_workers = SETTINGS.model_copy(update={"num_workers": 2})
    with pytest.raises(TrainingInterrupted):
        _run(tmp_path, with_workers, stop=StopRequest(at_micro_step=6))
    _assert_same_run(_run(tmp_path, with_workers, init_seed=9), reference)


def test_periodic_mid_epoch_checkpoint_resumes_exactly(tmp_path, reference):
    every_step = SETTINGS.model_copy(update={"checkpoint_every_steps": 1})
    saved = []
    try:
        _run(tmp_path, every_step, stop=StopRequest(at_micro_step=8),
             on_epoch_end=lambda epoch, metrics: saved.append(epoch))
    except TrainingInterrupted:
        pass
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    assert state["progress"]["micro_step"] == 3 and state["progress"]["optimizer_step"] == 4
    _assert_same_run(_run(tmp_path, every_step, init_seed=11), reference)


def test_resume_with_fp16_grad_scaler_is_exact(tmp_path_factory):
    """fp16 autocast + GradScaler (CPU here): scaler state and scaled mid-window gradients survive resume."""
    fp16 = SETTINGS.model_copy(update={"amp": "fp16"})
    reference = _run(tmp_path_factory.mktemp("fp16-reference"), fp16)
    run_dir = tmp_path_factory.mktemp("fp16-resumed")
    with pytest.raises(TrainingInterrupted):
        _run(run_dir, fp16, stop=StopRequest(at_micro_step=3))
    assert torch.load(run_dir / "last.pt", weights_only=True)["scaler"]["scale"] > 0
    _assert_same_run(_run(run_dir, fp16, init_seed=4), reference)
