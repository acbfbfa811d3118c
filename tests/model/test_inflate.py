"""2D → 3D ImageNet inflation: a depth-constant volume must reproduce the 2D network."""

import pytest
import torch
import torch.nn.functional as F
from monai.networks.nets import EfficientNetBN
from torch import nn

from idhhpc.model import build_model, inflate_2d_state_dict, load_pretrained_2d
from tests.support.pretrained import random_2d_state_dict

IN_CHANNELS = 4


class DepthReplicatePad(nn.Module):
    """MONAI's zero 'same' padding, except that depth (dim 2) is padded by replication."""

    def __init__(self, padding: tuple[int, ...]) -> None:
        super().__init__()
        self.padding = tuple(padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w_lo, w_hi, h_lo, h_hi, d_lo, d_hi = self.padding
        x = F.pad(x, (0, 0, 0, 0, d_lo, d_hi), mode="replicate")
        return F.pad(x, (w_lo, w_hi, h_lo, h_hi, 0, 0))


def _replicate_depth_padding(model: nn.Module) -> None:
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.ConstantPad3d):
            parent_name, _, attr = name.rpartition(".")
            setattr(model.get_submodule(parent_name), attr, DepthReplicatePad(module.padding))


def _random_2d_model(seed: int) -> EfficientNetBN:
    """A 2D b0 with random weights *and* random BatchNorm statistics, so every tensor matters."""
    model = EfficientNetBN("efficientnet-b0", pretrained=False, spatial_dims=2, in_channels=3)
    model.load_state_dict(random_2d_state_dict("b0", seed, flat_keys=False))
    return model.eval()


def _head_activation(model: nn.Module, volume: torch.Tensor) -> torch.Tensor:
    captured = []
    hook = model.get_submodule("_conv_head").register_forward_hook(lambda _m, _i, out: captured.append(out))
    with torch.no_grad():
        model(volume)
    hook.remove()
    return captured[0]


def test_inflated_model_reproduces_2d_model_on_depth_constant_volume(tmp_path):
    """Exact comparison on every depth slice of the head convolution (after all SE blocks).

    MONAI pads with zeros, so along depth a constant volume stops being constant at the
    border slices, and squeeze-excitation then pools those borders into every voxel. Replacing
    the depth padding by replication (height and width keep MONAI's zero padding) keeps a
    depth-constant volume constant through every layer, so each depth slice of the 3D head
    must equal the 2D head exactly; float64 removes the rounding of the 1/depth kernel split.
    The volume is longer along depth (64) than in-plane (32) so the head keeps two depth slices
    at little cost.
    """
    model_2d = _random_2d_model(seed=0)
    path = tmp_path / "b0_2d.pt"
    torch.save({"state_dict": model_2d.state_dict()}, path)

    model_3d = build_model("b0", in_channels=IN_CHANNELS, pretrained_2d=path).eval()
    _replicate_depth_padding(model_3d.net)
    grey = torch.randn(1, 1, 32, 32, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    volume = grey.unsqueeze(2).expand(1, IN_CHANNELS, 64, 32, 32)

    expected = _head_activation(model_2d.double(), grey.expand(1, 3, 32, 32))
    actual = _head_activation(model_3d.net.double(), volume)
    assert actual.shape[2:] == (2, 1, 1)
    for depth in range(actual.shape[2]):
        torch.testing.assert_close(actual[:, :, depth], expected, rtol=1e-8, atol=1e-8)


def test_inflation_splits_kernels_over_depth_and_keeps_the_new_head():
    model_2d = _random_2d_model(seed=2)
    model_3d = build_model("b0", in_channels=IN_CHANNELS)
    fc_before = model_3d.net._fc.weight.clone()
    inflated = inflate_2d_state_dict(model_2d.state_dict(), model_3d, IN_CHANNELS)
    stem_2d, stem_3d = model_2d._conv_stem.weight, inflated["net._conv_stem.weight"]
    assert stem_3d.shape == (stem_2d.shape[0], IN_CHANNELS, 3, 3, 3)
    torch.testing.assert_close(stem_3d.sum(dim=(1, 2)), stem_2d.sum(dim=1))
    assert torch.equal(inflated["net._fc.weight"], fc_before)
    assert torch.equal(inflated["net._bn0.running_var"], model_2d._bn0.running_var)


def test_file_of_another_variant_fails_naming_file_variant_and_keys(tmp_path):
    path = tmp_path / "b0_2d.pt"
    torch.save(_random_2d_model(seed=0).state_dict(), path)
    with pytest.raises(ValueError) as error:
        build_model("b1", pretrained_2d=path)
    message = str(error.value)
    assert str(path) in message and "efficientnet-b1" in message
    assert "missing keys" in message and "_blocks." in message


def test_wrong_shapes_and_extra_keys_fail_clearly(tmp_path):
    state = _random_2d_model(seed=0).state_dict()
    state["_conv_head.weight"] = state["_conv_head.weight"][:10]
    state["decoder.weight"] = torch.zeros(1)
    path = tmp_path / "broken.pt"
    torch.save({"model": state}, path)
    expected = r"unexpected keys \['decoder.weight'\].*shape mismatches \['_conv_head"
    with pytest.raises(ValueError, match=expected):
        load_pretrained_2d(build_model("b0"), path)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        build_model("b0", pretrained_2d=tmp_path / "nope.pt")
