"""Generated "pretrained" 2D EfficientNet weights, as files and as a filled torch hub cache.

Tests never download: they write a 2D state dict with random weights *and* random BatchNorm
statistics (so every tensor matters) in the layout of the real release files, and put it where
``idhhpc.weights`` looks for the ImageNet file.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from monai.networks.nets import EfficientNetBN
from torch import nn

from idhhpc import weights

_STAGE_INDEX = re.compile(r"^(_blocks)\.\d+(\.\d+\..+)$")


def random_2d_state_dict(variant: str = "b0", seed: int = 0, flat_keys: bool = True) -> dict[str, torch.Tensor]:
    """A 2D MONAI EfficientNetBN state dict with a 1000-class head; ``flat_keys`` renames
    ``_blocks.<stage>.<n>.`` to lukemelas' ``_blocks.<n>.``, as in the files MONAI downloads."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = EfficientNetBN(f"efficientnet-{variant}", pretrained=False, spatial_dims=2, in_channels=3,
                               num_classes=1000)
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.data.uniform_(0.5, 1.5)
                module.bias.data.uniform_(-0.2, 0.2)
    state = model.state_dict()
    return {(_STAGE_INDEX.sub(r"\1\2", k) if flat_keys else k): v for k, v in state.items()}


def write_2d_weights(path: Path, variant: str = "b0", seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(random_2d_state_dict(variant, seed), path)
    return path


def fill_hub_cache(variant: str = "b0", seed: int = 0) -> Path:
    """Write generated weights where ``idhhpc.weights`` (and MONAI) look for the ImageNet file,
    under the current ``TORCH_HOME``."""
    return write_2d_weights(weights.cached_path(variant), variant, seed)
