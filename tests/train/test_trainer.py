import math

import pytest
import torch

from idhhpc.config import TrainConfig
from idhhpc.train.stopping import StopRequest, TrainingInterrupted, request_stop
from idhhpc.train.trainer import train
from tests.support.toy import TinyConvNet, make_toy_dataset

SETTINGS = TrainConfig(epochs=2, micro_batch=2, accumulate=2, max_lr=1e-2, num_workers=0, patience=5,
                       select_metric="val/auc")


def _datasets():
    return make_toy_dataset(10, size=12, seed=1), make_toy_dataset(6, size=12, seed=2, mutant_share=0.5, prefix="VAL")


def _run(run_dir, settings=SETTINGS, **kwargs):
    torch.manual_seed(0)
    train_ds, val_ds = _datasets()
    return train(TinyConvNet(), train_ds, val_ds, settings, run_dir, **kwargs)


def test_train_records_history_checkpoints_and_best_predictions(tmp_path):
    seen = []
    result = _run(tmp_path, on_epoch_end=lambda epoch, metrics: seen.append((epoch, metrics)))
    assert [h["epoch"] for h in result.history] == [0, 1] == [e for e, _ in seen]
    assert {"train/loss", "val/loss", "val/auc", "lr"} <= set(result.history[0])
    assert result.history[-1]["optimizer_step"] == 6
    assert result.history[-1]["lr"] == pytest.approx(SETTINGS.max_lr / (SETTINGS.div_factor * SETTINGS.final_div_factor))
    assert result.best_checkpoint.exists() and result.last_checkpoint.exists()
    assert len(result.best_val_probs) == 6 and sorted(result.best_val_labels) == [0, 0, 0, 1, 1, 1]
    assert all(0.0 <= p <= 1.0 for p in result.best_val_probs)
    assert result.best_val_patient_ids[0].startswith("VAL-")
    best = torch.load(result.best_checkpoint, weights_only=True)
    assert best["epoch"] == result.best_epoch


def test_completed_run_is_not_retrained(tmp_path):
    first = _run(tmp_path)
    weights = torch.load(first.last_checkpoint, weights_only=True)["model"]
    again = _run(tmp_path)
    assert again.history == first.history
    assert all(torch.equal(v, weights[k]) for k, v in torch.load(again.last_checkpoint, weights_only=True)["model"].items())


def test_one_class_validation_gives_nan_auc_and_still_selects_best(tmp_path):
    torch.manual_seed(0)
    train_ds = make_toy_dataset(10, size=12, seed=1)
    val_ds = make_toy_dataset(4, size=12, seed=2, mutant_share=0.0)
    val_ds._labels = [0] * 4
    result = train(TinyConvNet(), train_ds, val_ds, SETTINGS, tmp_path)
    assert all(math.isnan(h["val/auc"]) for h in result.history)
    assert result.best_epoch == 0 and result.best_checkpoint.exists()


def test_early_stopping_on_val_loss(tmp_path):
    settings = TrainConfig(epochs=6, micro_batch=5, accumulate=1, num_workers=0, patience=1,
                           select_metric="val/loss", augment=False).model_copy(update={"max_lr": 0.0})
    torch.manual_seed(0)
    model = TinyConvNet()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm3d):
            module.momentum = 0.0
    result = train(model, *_datasets(), settings, tmp_path)
    assert len(result.history) == 2 and result.best_epoch == 0
    assert result.history[0]["val/loss"] == result.history[1]["val/loss"]


def test_request_stop_hook_interrupts_and_different_config_hash_is_refused(tmp_path):
    with pytest.raises(TrainingInterrupted) as stopped:
        _run(tmp_path, on_epoch_end=lambda epoch, metrics: request_stop(), config_hash="abc")
    assert stopped.value.epoch == 1 and stopped.value.micro_step == 0
    with pytest.raises(ValueError, match="last.pt belongs to config 'abc'"):
        _run(tmp_path, config_hash="xyz")
    restarted = _run(tmp_path, config_hash="xyz", restart=True)
    assert len(restarted.history) == 2


def test_stop_request_at_micro_step(tmp_path):
    with pytest.raises(TrainingInterrupted) as stopped:
        _run(tmp_path, stop=StopRequest(at_micro_step=3))
    assert (stopped.value.epoch, stopped.value.micro_step) == (0, 3)
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    assert state["gradients"], "a mid-window checkpoint must keep the accumulated gradients"


def test_the_default_keeps_the_last_epoch_without_looking_at_validation(tmp_path):
    settings = SETTINGS.model_copy(update={"select_metric": "last", "epochs": 3})
    torch.manual_seed(0)
    result = train(TinyConvNet(), *_datasets(), settings, tmp_path)
    assert TrainConfig().select_metric == "last"
    assert result.best_epoch == 2 and len(result.history) == 3
    kept = torch.load(result.best_checkpoint, weights_only=True)["model"]
    last = torch.load(result.last_checkpoint, weights_only=True)["model"]
    assert all(torch.equal(v, last[k]) for k, v in kept.items())
