"""A tiny 3D EfficientNet and a structured 64³ image that give non-degenerate CAMs on a CPU.

An untrained MONAI EfficientNet in eval mode has activations around 1e-14; CAMs are normalised
by their maximum, so that scale does not matter, but the image must be large enough for a 2³
head feature map and hold some structure for the CAM to vary.
"""

from __future__ import annotations

import pytest
import torch
from monai.networks.nets import EfficientNetBN
from torch import nn

SIZE = 64


@pytest.fixture(scope="module")
def tiny_net() -> nn.Module:
    torch.manual_seed(0)
    net = EfficientNetBN("efficientnet-b0", pretrained=False, spatial_dims=3, in_channels=4, num_classes=2)
    return net.eval()


def make_image(seed: int = 1) -> torch.Tensor:
    image = 0.1 * torch.randn(4, SIZE, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))
    image[:, 30:44, 28:42, 6:20] += 3.0
    return image


@pytest.fixture()
def image() -> torch.Tensor:
    return make_image()
