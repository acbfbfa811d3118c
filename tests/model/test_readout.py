"""The compartment readout: what it measures, what it trains, and where it is allowed."""

import pytest
import torch

from idhhpc.config import ModelConfig, ValidationError
from idhhpc.constants import TUMOR_LABELS
from idhhpc.model import build_model
from idhhpc.model.readout import THRESHOLDS, CompartmentReadout, compartment_statistics, statistic_count


def _logits_of(classes: torch.Tensor) -> torch.Tensor:
    """Confident segmentation logits (B, 4, *spatial) for a class-index map (B, *spatial)."""
    return torch.nn.functional.one_hot(classes, len(TUMOR_LABELS)).movedim(-1, 1).float() * 40.0


def test_statistics_measure_volume_mean_and_share_under_each_compartment():
    classes = torch.zeros(1, 8, 8, 8, dtype=torch.long)
    classes[0, :2] = 3  # 128 enhancing voxels (class index 3)
    classes[0, 2:3] = 2  # 64 edema voxels
    image = torch.zeros(1, 2, 8, 8, 8)
    image[0, 1, :2] = 3.0  # channel 1 bright where it enhances
    stats = compartment_statistics(image, _logits_of(classes))[0]
    regions = len(TUMOR_LABELS) + 1
    assert stats.shape[0] == statistic_count(2)
    volumes = stats[:regions].expm1()
    assert volumes[0] == pytest.approx(192, rel=1e-3)  # the whole tumour
    assert volumes[3] == pytest.approx(128, rel=1e-3) and volumes[2] == pytest.approx(64, rel=1e-3)
    means = stats[regions: regions + 2 * regions].view(regions, 2)
    assert means[3, 1] == pytest.approx(3.0, abs=1e-3) and means[2, 1] == pytest.approx(0.0, abs=1e-3)
    assert means[0, 1] == pytest.approx(2.0, abs=1e-3)  # 128 of 192 voxels at 3
    shares = stats[-2 * 2 * len(THRESHOLDS):].view(2, 2, len(THRESHOLDS))
    above_one = THRESHOLDS.index(1.0)
    assert shares[0, 1, above_one] == pytest.approx(2 / 3, abs=0.01)  # whole tumour, channel 1
    assert shares[1, 1, above_one] == pytest.approx(1.0, abs=0.01)  # the core is all enhancing


@pytest.mark.parametrize("channels", [4, 5])
def test_statistic_count_follows_the_channels(channels):
    stats = compartment_statistics(torch.randn(2, channels, 6, 6, 6), torch.randn(2, 4, 6, 6, 6))
    assert stats.shape == (2, statistic_count(channels)) and torch.isfinite(stats).all()


def test_a_new_readout_adds_nothing_and_the_idh_loss_trains_it_not_the_decoder():
    torch.manual_seed(0)
    model = build_model("b0", 4, segment=True, readout=True, norm="group")
    images, labels = torch.randn(4, 4, 32, 32, 32), torch.tensor([0, 1, 0, 1])
    logits, segment_logits = model(images, segment=True)
    assert torch.equal(model.readout.linear.weight, torch.zeros_like(model.readout.linear.weight))
    torch.nn.functional.cross_entropy(logits, labels).backward()
    assert model.readout.linear.weight.grad.abs().sum() > 0
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in model.decoder.parameters())
    assert segment_logits.shape == (4, 4, 32, 32, 32)


def test_running_statistics_move_in_training_only():
    readout = CompartmentReadout(channels=2)
    images, segment_logits = torch.randn(3, 2, 6, 6, 6), torch.randn(3, 4, 6, 6, 6)
    readout.train()(images, segment_logits)
    seen = readout.running_mean.clone()
    readout.eval()(images * 5, segment_logits)
    assert torch.equal(readout.running_mean, seen) and int(readout.batches_seen) == 1
    readout.train()(images * 5, segment_logits)
    assert not torch.equal(readout.running_mean, seen)


def test_the_plain_call_includes_the_readout():
    torch.manual_seed(0)
    model = build_model("b0", 4, segment=True, readout=True, norm="group").eval()
    with torch.no_grad():
        model.readout.linear.weight.normal_()
        images = torch.randn(2, 4, 32, 32, 32)
        assert torch.allclose(model(images), model(images, segment=True)[0])


def test_a_readout_needs_the_segmentation_decoder():
    with pytest.raises(ValidationError, match="segment\\+classify"):
        ModelConfig(readout="compartments", head="classify")
    with pytest.raises(ValueError, match="decoder"):
        build_model("b0", 4, segment=False, readout=True, norm="group")


def test_in_evaluation_the_gradient_follows_the_readout_through_the_decoder():
    """Grad-CAM explains the logits the model gives: the readout's path counts outside training."""
    torch.manual_seed(0)
    model = build_model("b0", 4, segment=True, readout=True, norm="group").eval()
    with torch.no_grad():
        model.readout.linear.weight.normal_()
    model(torch.randn(2, 4, 32, 32, 32))[:, 1].sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.decoder.parameters())


def test_auto_readout_follows_the_head():
    """The built-in job says ``auto``: switching it to the classifier alone needs no second key."""
    assert ModelConfig(readout="auto", head="segment+classify").readout == "compartments"
    assert ModelConfig(readout="auto", head="classify").readout == "none"
