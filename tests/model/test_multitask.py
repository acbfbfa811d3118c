"""The multi-task network (model.head: segment+classify): decoder shapes, the joint loss, its
training step, the decoder's learning rate and the locator's inverse crop."""

import numpy as np
import pytest
import torch

from idhhpc.config import TrainConfig
from idhhpc.constants import EDEMA, ENHANCING, NECROSIS
from idhhpc.data.augment import AugmentedDataset, make_paired_transform, make_train_transform
from idhhpc.evaluate.segmentation import compartment_dice, mean_dice
from idhhpc.model import build_model
from idhhpc.model.decoder import SEGMENT_CLASSES, compartment_classes
from idhhpc.model.locator import largest_component
from idhhpc.train.loss import make_loss, make_segment_loss
from idhhpc.train.optim import make_optimizer, make_scheduler
from idhhpc.train.step import Optimization, training_step


@pytest.mark.parametrize("variant,size", [("b0", 32), ("b7", 32), ("b0", 48)])
def test_decoder_gives_one_logit_per_compartment_on_the_input_grid(variant, size):
    model = build_model(variant, 4, segment=True, norm="group", trainable_stages=-1).eval()
    x = torch.randn(2, 4, size, size, size)
    with torch.no_grad():
        logits, segmentation = model(x, segment=True)
        plain = model(x)
    assert logits.shape == (2, 2) and segmentation.shape == (2, SEGMENT_CLASSES, size, size, size)
    assert torch.allclose(plain, logits, atol=1e-5)  # the classifier path is the same encoder


def test_classifier_without_decoder_refuses_segmentation():
    model = build_model("b0", 4, norm="group", trainable_stages=-1)
    assert not model.segments
    with pytest.raises(ValueError, match="no segmentation decoder"):
        model(torch.randn(1, 4, 32, 32, 32), segment=True)


def test_decoder_trains_with_a_frozen_pretrained_style_prefix():
    model = build_model("b0", 4, segment=True, trainable_stages=2)
    logits, segmentation = model(torch.randn(2, 4, 32, 32, 32), segment=True)
    (logits.sum() + segmentation.sum()).backward()
    assert all(p.grad is not None for p in model.decoder.parameters())
    assert all(p.grad is None for p in model.net._blocks[0].parameters())


def test_compartment_classes_follow_the_tumour_labels():
    tumor = torch.tensor([0, NECROSIS, EDEMA, ENHANCING], dtype=torch.uint8)
    assert compartment_classes(tumor).tolist() == [0, 1, 2, 3]


def _batch(n: int = 2, size: int = 32, has_tumor=(True, False)) -> dict:
    tumor = torch.zeros(n, size, size, size, dtype=torch.uint8)
    tumor[:, 8:20, 8:20, 8:20] = EDEMA
    tumor[:, 12:16, 12:16, 12:16] = ENHANCING
    return {"image": torch.randn(n, 4, size, size, size), "label": torch.tensor([0, 1][:n]),
            "tumor": tumor, "has_tumor": torch.tensor(has_tumor[:n])}


def _optimization(model, segment: bool) -> Optimization:
    settings = TrainConfig(epochs=2, micro_batch=2, accumulate=1, max_lr=1e-3, loss="ce")
    optimizer = make_optimizer(model, settings)
    return Optimization(forward_model=model, optimizer=optimizer, scheduler=make_scheduler(optimizer, settings, 4),
                        scaler=None, loss_fn=make_loss(settings), device=torch.device("cpu"), amp_dtype=None,
                        grad_clip=1.0, segment_loss_fn=make_segment_loss() if segment else None)


def test_multitask_step_adds_the_segmentation_loss_of_masked_patients_only():
    torch.manual_seed(0)
    model = build_model("b0", 4, segment=True, norm="group", trainable_stages=-1)
    opt = _optimization(model, segment=True)
    loss = training_step(opt, _batch(), window=1, ends_window=True)
    assert torch.isfinite(loss) and len(opt.segment_losses) == 1 and opt.segment_losses[0] > 0
    opt.segment_losses.clear()
    training_step(opt, _batch(has_tumor=(False, False)), window=1, ends_window=True)
    assert opt.segment_losses == []  # no mask: nothing to segment, the IDH loss alone


def test_segmentation_loss_moves_the_decoder_and_classification_alone_does_not():
    torch.manual_seed(0)
    model = build_model("b0", 4, segment=True, norm="group", trainable_stages=-1)
    before = [p.detach().clone() for p in model.decoder.parameters()]
    training_step(_optimization(model, segment=False), _batch(), window=1, ends_window=True)
    assert all(torch.equal(a, b) for a, b in zip(before, model.decoder.parameters()))
    training_step(_optimization(model, segment=True), _batch(), window=1, ends_window=True)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.decoder.parameters()))


def test_decoder_gets_its_own_learning_rate():
    model = build_model("b0", 4, segment=True, norm="group", trainable_stages=-1)
    settings = TrainConfig(epochs=1, micro_batch=2, max_lr=1e-3, decoder_lr_scale=10)
    optimizer = make_optimizer(model, settings)
    scheduler = make_scheduler(optimizer, settings, 4)
    rates = {group.get("lr_scale", 1.0): group["lr"] for group in optimizer.param_groups}
    assert rates[10] == pytest.approx(10 * rates[1.0]) and scheduler.get_last_lr()


def test_paired_augmentation_moves_image_and_mask_together():
    image = torch.zeros(4, 16, 16, 16)
    image[:, 0:4] = 1.0
    tumor = torch.zeros(16, 16, 16, dtype=torch.uint8)
    tumor[0:4] = EDEMA

    class Base(torch.utils.data.Dataset):
        labels = [0]

        def __len__(self):
            return 1

        def __getitem__(self, i):
            return {"image": image.clone(), "tumor": tumor.clone(), "label": 0}

    data = AugmentedDataset(Base(), make_train_transform(3, "flips"), seed=3, paired=make_paired_transform(3, "flips"))
    for epoch in range(6):
        data.set_epoch(epoch)
        item = data[0]
        assert torch.equal(item["image"][0] > 0.5, item["tumor"] == EDEMA)
        assert item["tumor"].dtype == torch.uint8


def test_dice_per_compartment_and_empty_ones_left_out():
    reference = np.zeros((8, 8, 8), np.uint8)
    reference[:4] = EDEMA
    prediction = reference.copy()
    prediction[:2] = ENHANCING
    scores = compartment_dice(prediction, reference)
    assert scores["edema"] == pytest.approx(2 * 128 / (128 + 256))
    assert scores["tumor"] == 1.0 and np.isnan(scores["necrosis"])
    assert mean_dice([scores, {"tumor": 0.0}])["tumor"] == 0.5


def test_largest_component_drops_stray_voxels():
    mask = np.zeros((10, 10, 10), bool)
    mask[1:5, 1:5, 1:5] = True
    mask[8, 8, 8] = True
    kept = largest_component(mask)
    assert kept.sum() == 64 and not kept[8, 8, 8]
