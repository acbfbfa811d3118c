"""Seeded 3D augmentation for the training split.

Randomness for an item is a pure function of (seed, epoch, index, draw), set on the transform
just before it runs, so results do not depend on the number of DataLoader workers, on the
order workers pick items up, or on whether the run was resumed.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import Randomizable
from monai.transforms import (
    Compose,
    RandAdjustContrast,
    RandAffine,
    RandBiasField,
    RandFlip,
    RandGaussianNoise,
    RandScaleIntensity,
    RandShiftIntensity,
    RandAffined,
    RandFlipd,
)
from torch.utils.data import Dataset

AUGMENT_STREAM = 2


def make_train_transform(seed: int = 0, kind: str = "full") -> Compose:
    """Flips (``kind="flips"``), or flips, small rotation/scale, bias field, contrast, intensity
    jitter and noise (``"full"``) on (C, D, H, W).

    Geometry first (flip, affine) so intensity changes are not resampled; the bias field and
    gamma act before the additive jitter and noise, as on a real scanner.
    """
    flips = [RandFlip(prob=0.5, spatial_axis=axis) for axis in range(3)]
    if kind not in ("flips", "full"):
        raise ValueError(f"augmentation kind must be 'flips' or 'full', got {kind!r}")
    transform = Compose(flips if kind == "flips" else flips + _affine_and_intensity())
    transform.set_random_state(seed=seed)
    return transform


def _affine_and_intensity() -> list:
    rotate = math.radians(10.0)
    return [
        RandAffine(prob=0.5, rotate_range=(rotate,) * 3, scale_range=(0.1,) * 3, mode="bilinear",
                   padding_mode="zeros"),
        RandBiasField(prob=0.3, degree=3, coeff_range=(0.0, 0.1)),
        RandAdjustContrast(prob=0.3, gamma=(0.7, 1.5)),
        RandScaleIntensity(prob=0.5, factors=0.1),
        RandShiftIntensity(prob=0.5, offsets=0.1),
        RandGaussianNoise(prob=0.3, mean=0.0, std=0.05),
    ]


def make_paired_transform(seed: int = 0, kind: str = "full") -> Compose:
    """The same augmentation on ``{"image", "tumor"}``: the geometry moves both (the mask by nearest
    neighbour), the intensity changes touch the image only, so the multi-task network's
    segmentation target stays aligned with what it sees."""
    if kind not in ("flips", "full"):
        raise ValueError(f"augmentation kind must be 'flips' or 'full', got {kind!r}")
    keys = ("image", "tumor")
    steps = [RandFlipd(keys, prob=0.5, spatial_axis=axis) for axis in range(3)]
    if kind == "full":
        rotate = math.radians(10.0)
        intensity = _affine_and_intensity()[1:]
        steps += [RandAffined(keys, prob=0.5, rotate_range=(rotate,) * 3, scale_range=(0.1,) * 3,
                              mode=("bilinear", "nearest"), padding_mode="zeros"), _ImageOnly(Compose(intensity))]
    transform = Compose(steps)
    transform.set_random_state(seed=seed)
    return transform


class _ImageOnly(Randomizable):
    """Applies a seeded array transform to ``data["image"]`` of a dict and leaves the mask alone."""

    def __init__(self, transform: Compose) -> None:
        self.transform = transform

    def set_random_state(self, seed=None, state=None) -> "_ImageOnly":
        super().set_random_state(seed=seed, state=state)
        self.transform.set_random_state(seed=seed, state=state)
        return self

    def randomize(self, data: Any) -> None:  # the inner transforms draw for themselves
        pass

    def __call__(self, data: dict) -> dict:
        return {**data, "image": self.transform(data["image"])}


def item_seed(seed: int, epoch: int, index: int, draw: int = 0) -> int:
    """A 32-bit seed (numpy RandomState's limit) for one augmented item."""
    return int(np.random.SeedSequence([seed, AUGMENT_STREAM, epoch, index, draw]).generate_state(1)[0])


class AugmentedDataset(Dataset):
    """Applies ``transform`` to ``base[i]["image"]``; keys may be ``i`` or ``(i, draw)``.

    ``draw`` (the position of the item in the epoch's sample order) gives repeated draws of an
    oversampled item different augmentations within one epoch.
    """

    def __init__(self, base: Dataset, transform: Callable[[torch.Tensor], Any] | None = None, seed: int = 0,
                 paired: Callable[[dict], dict] | None = None) -> None:
        self.base = base
        self.transform = transform if transform is not None else make_train_transform(seed)
        self.paired = paired
        """Used instead of ``transform`` for items that carry a ``tumor`` mask (multi-task training)."""
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def labels(self) -> list[int]:
        return list(self.base.labels)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        index, draw = key if isinstance(key, tuple) else (key, 0)
        item = dict(self.base[index])
        seed = item_seed(self.seed, self.epoch, index, draw)
        if self.paired is not None and "tumor" in item:
            self.paired.set_random_state(seed=seed)
            moved = self.paired({"image": item["image"], "tumor": item["tumor"][None]})
            item["image"] = _plain_float_tensor(moved["image"])
            item["tumor"] = torch.as_tensor(_plain_float_tensor(moved["tumor"])[0].round(), dtype=torch.uint8)
            return item
        self.transform.set_random_state(seed=seed)
        item["image"] = _plain_float_tensor(self.transform(item["image"]))
        return item


def _plain_float_tensor(image: Any) -> torch.Tensor:
    if isinstance(image, MetaTensor):
        image = image.as_tensor()
    return torch.as_tensor(image, dtype=torch.float32).contiguous()
