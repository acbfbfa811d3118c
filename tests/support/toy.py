"""A tiny 3D network and an in-memory dataset with the shard item format, for tests and demos.

They let the training engine (and stages built on it) run end to end in seconds on a CPU.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import Dataset


class TinyConvNet(nn.Module):
    """Conv → BatchNorm → ReLU → pool → dropout → linear: every layer kind the engine must handle."""

    def __init__(self, in_channels: int = 4, num_classes: int = 2, width: int = 8, dropout: float = 0.2) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv3d(in_channels, width, 3, padding=1), nn.BatchNorm3d(width), nn.ReLU(),
            nn.Conv3d(width, width, 3, stride=2, padding=1), nn.BatchNorm3d(width), nn.ReLU(),
            nn.AdaptiveAvgPool3d(1), nn.Flatten(),
        )
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(x)))


class InMemoryDataset(Dataset):
    """Items ``{"image": (C, D, H, W) float32, "label": int, "patient_id": str}`` like ShardDataset."""

    def __init__(self, images: torch.Tensor, labels: list[int], patient_ids: list[str]) -> None:
        if not len(images) == len(labels) == len(patient_ids):
            raise ValueError("InMemoryDataset: images, labels and patient_ids differ in length")
        self.images = images
        self._labels = [int(label) for label in labels]
        self.patient_ids = list(patient_ids)

    @property
    def labels(self) -> list[int]:
        return list(self._labels)

    def __len__(self) -> int:
        return len(self._labels)

    def __getitem__(self, index: int) -> dict:
        return {"image": self.images[index].clone(), "label": self._labels[index], "patient_id": self.patient_ids[index]}


def make_toy_dataset(n: int, size: int = 16, channels: int = 4, mutant_share: float = 0.3, seed: int = 0,
                     prefix: str = "TOY") -> InMemoryDataset:
    """Mutants carry a brighter blob, so a model can learn something within a few steps."""
    generator = torch.Generator().manual_seed(seed)
    n_mutant = max(1, round(n * mutant_share))
    labels = [1] * n_mutant + [0] * (n - n_mutant)
    images = torch.randn(n, channels, size, size, size, generator=generator)
    centre = slice(size // 4, 3 * size // 4)
    for i, label in enumerate(labels):
        images[i, :, centre, centre, centre] += 1.5 * label
    return InMemoryDataset(images, labels, [f"{prefix}-{i:04d}" for i in range(n)])
