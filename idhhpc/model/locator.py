"""The tumour locator: a small U-Net that finds the tumour in the whole-brain cube.

A multi-task model looks at a tumour-centred cube, and a new patient comes without the expert
segmentation that chooses it. The locator segments the whole brain at the cube's resolution
(``preprocess.size``, e.g. 32³ of a 16 cm brain: 5 mm voxels, enough to place a crop), so
``predict`` and the mask-free test figures crop where the locator points and the multi-task
network then segments and classifies at full resolution. It trains in the ``fit`` run on the
fit patients' whole-brain cubes (``preprocess.locator``; :mod:`idhhpc.train.locator`), in
seconds, and ships inside ``model.pt``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from monai.networks.nets import UNet
from scipy import ndimage
from torch import nn

LOCATOR_CHANNELS = (8, 16, 32, 64)


def build_locator(in_channels: int) -> nn.Module:
    """MONAI's UNet, 4 levels of 8-64 channels, instance norm, two classes (background, tumour)."""
    return UNet(spatial_dims=3, in_channels=in_channels, out_channels=2, channels=LOCATOR_CHANNELS,
                strides=(2, 2, 2), norm="instance", num_res_units=0)


class Locator:
    """A trained locator as the ``locate`` callable of :func:`idhhpc.data.preprocess.preprocess_case`."""

    def __init__(self, weights: dict[str, Any], in_channels: int, device: torch.device | str = "cpu") -> None:
        self.model = build_locator(in_channels)
        self.model.load_state_dict(weights)
        self.device = torch.device(device)
        self.model.to(self.device).eval()

    @torch.no_grad()
    def __call__(self, whole_brain: np.ndarray) -> np.ndarray:
        """The largest connected tumour component (uint8 0/1) of a (C,S,S,S) whole-brain cube."""
        x = torch.from_numpy(np.asarray(whole_brain, dtype=np.float32))[None].to(self.device)
        tumour = [torch.softmax(self.model(x), 1)[:, 1:]]
        tumour += [torch.softmax(self.model(x.flip(axis)), 1)[:, 1:].flip(axis) for axis in (2, 3, 4)]
        mask = (torch.stack(tumour).mean(0)[0, 0] > 0.5).cpu().numpy()
        return largest_component(mask).astype(np.uint8)


def largest_component(mask: np.ndarray) -> np.ndarray:
    """Keep the largest 26-connected component: one tumour per patient, stray voxels dropped."""
    labels, count = ndimage.label(mask, structure=np.ones((3, 3, 3), bool))
    if count <= 1:
        return mask.astype(bool)
    sizes = np.bincount(labels.ravel())[1:]
    return labels == (int(np.argmax(sizes)) + 1)
