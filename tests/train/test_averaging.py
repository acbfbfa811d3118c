"""The moving average of the weights: what validation scores, what the kept checkpoint holds, and
what a resumed run restores bit for bit."""

import pytest
import torch

from idhhpc.config import TrainConfig
from idhhpc.train.stopping import StopRequest, TrainingInterrupted
from idhhpc.train.trainer import train
from tests.support.toy import TinyConvNet, make_toy_dataset

SETTINGS = TrainConfig(epochs=2, micro_batch=2, accumulate=2, max_lr=1e-2, num_workers=0, patience=5,
                       ema_decay=0.9)


def _run(run_dir, settings=SETTINGS, init_seed=0, **kwargs):
    torch.manual_seed(init_seed)
    model = TinyConvNet(dropout=0.3)
    train_ds = make_toy_dataset(9, size=10, seed=1)
    val_ds = make_toy_dataset(6, size=10, seed=2, mutant_share=0.5)
    return train(model, train_ds, val_ds, settings, run_dir, **kwargs), model


def _load(path):
    return torch.load(path, weights_only=True)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("reference"))


def test_the_kept_model_is_the_average_not_the_last_weights(reference):
    result, model = reference
    kept, last = _load(result.best_checkpoint)["model"], _load(result.last_checkpoint)
    assert kept.keys() == model.state_dict().keys()
    assert not all(torch.equal(kept[k], v) for k, v in model.state_dict().items())  # not the raw weights
    average = {k.removeprefix("module."): v for k, v in last["average"].items() if k.startswith("module.")}
    assert all(torch.equal(kept[k], average[k]) for k in kept)
    assert int(last["average"]["n_averaged"]) == 2 * 3  # 3 optimizer steps per epoch, 2 epochs


def test_scoring_uses_the_average(reference, tmp_path):
    result, _ = reference
    net = TinyConvNet(dropout=0.3)
    net.load_state_dict(_load(result.best_checkpoint)["model"])
    net.eval()
    val_ds = make_toy_dataset(6, size=10, seed=2, mutant_share=0.5)
    with torch.no_grad():
        probs = [torch.softmax(net(val_ds[i]["image"][None]), 1)[0, 1].item() for i in range(len(val_ds))]
    assert probs == pytest.approx(result.best_val_probs, abs=1e-5)


@pytest.mark.parametrize("stop_at", [3, 5])
def test_resume_restores_the_average_exactly(tmp_path, reference, stop_at):
    with pytest.raises(TrainingInterrupted):
        _run(tmp_path, stop=StopRequest(at_micro_step=stop_at))  # the same run, interrupted
    resumed, _ = _run(tmp_path, init_seed=7)
    ref = _load(reference[0].last_checkpoint)["average"]
    got = _load(resumed.last_checkpoint)["average"]
    assert ref.keys() == got.keys() and all(torch.equal(ref[k], got[k]) for k in ref)
    assert resumed.history == reference[0].history


def test_without_decay_there_is_no_average(tmp_path):
    result, model = _run(tmp_path, settings=SETTINGS.model_copy(update={"ema_decay": 0.0}))
    assert _load(result.last_checkpoint)["average"] == {}
    kept = _load(result.best_checkpoint)["model"]
    assert all(torch.equal(kept[k], v) for k, v in model.state_dict().items())


def test_flip_scoring_gives_the_kept_predictions_and_only_the_last_epoch_pays_for_it(tmp_path):
    from idhhpc.model import build_model
    from idhhpc.predictor import iter_logits, prob_mutant

    torch.manual_seed(0)
    model = build_model("b0", dropout=0.0, norm="group")
    model.score_flips = True
    calls = []
    model.register_forward_pre_hook(lambda module, args: calls.append(module.training))
    train_ds = make_toy_dataset(4, size=32, seed=1)
    val_ds = make_toy_dataset(3, size=32, seed=2, mutant_share=0.5)
    settings = SETTINGS.model_copy(update={"epochs": 2, "accumulate": 1})
    result = train(model, train_ds, val_ds, settings, tmp_path)
    # the average (a deep copy, hook included) is scored: 2 validation batches per epoch, plain in
    # the first epoch, 4 passes each in the last
    assert calls.count(False) == 2 + 2 * 4
    kept = build_model("b0", dropout=0.0, norm="group")
    kept.load_state_dict(_load(result.best_checkpoint)["model"])
    kept.eval().score_flips = True
    batch = {"image": torch.stack([val_ds[i]["image"] for i in range(len(val_ds))])}
    with torch.no_grad():
        logits, _ = next(iter_logits(kept, [batch], torch.device("cpu")))
    assert prob_mutant(logits).tolist() == pytest.approx(result.best_val_probs, abs=1e-5)
    assert result.history[0]["val/auc"] is not None and model.score_flips
