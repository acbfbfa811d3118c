"""Histogram standardisation of external volumes onto the training patients' intensity landmarks.

Nyul and Udupa's standardisation, which torchio's ``HistogramStandardization`` implements, maps
each image's percentile landmarks piecewise linearly onto a standard scale learned from training
images. Here the standard scale is the mean landmarks of the training patients' preprocessed
volumes (fitted on the non-test patients only, never on the external cohort or its labels), and
only external volumes are mapped: the network was trained on the training patients as they are,
so a finished launch is harmonised without retraining (torchio maps the training images too,
which needs a new training run).

Landmarks are taken on normal-appearing brain (brain voxels outside the tumour segmentation,
where the shard has one): a tumour-centred cube is mostly tumour, and matching tumour histograms
would erase the very intensities that tell mutant from wildtype. The mapping then applies to
every brain voxel, extended linearly past the outer landmarks; voxels outside the brain keep
their value.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from idhhpc.data.dataset import ShardDataset

PERCENTILES = (1.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 99.0)
"""torchio's default: the 1st and 99th percentiles and the deciles between them."""


def reference_region(brain: np.ndarray, tumor: np.ndarray | None) -> np.ndarray:
    """Brain voxels outside the tumour; the whole brain when that leaves too few voxels."""
    inside = np.asarray(brain) != 0
    if tumor is None:
        return inside
    normal = inside & (np.asarray(tumor) == 0)
    return normal if normal.sum() >= max(100, inside.sum() // 10) else inside


def landmarks(image: np.ndarray, region: np.ndarray, n_modalities: int) -> np.ndarray:
    """(modalities, len(PERCENTILES)) percentiles of each modality channel inside ``region``."""
    image = np.asarray(image, dtype=np.float32)
    return np.stack([np.percentile(channel[region], PERCENTILES) for channel in image[:n_modalities]])


def fit_standard(index_path: Path, patient_ids: list[str], n_modalities: int) -> np.ndarray:
    """The mean landmarks of ``patient_ids`` (the training patients) in a shard index."""
    dataset = ShardDataset(index_path, patient_ids, with_masks=True)
    try:
        rows = [landmarks(item["image"].numpy(), reference_region(item["brain"].numpy(), _tumor(item)), n_modalities)
                for item in (dataset[i] for i in range(len(dataset)))]
    finally:
        dataset.close()
    if not rows:
        raise ValueError(f"no training patients in {index_path} to fit the histogram standard on")
    return np.mean(rows, axis=0)


def standardise(image: np.ndarray, brain: np.ndarray, tumor: np.ndarray | None, standard: np.ndarray) -> np.ndarray:
    """``image`` with each modality's landmarks mapped onto ``standard`` (see the module docstring)."""
    out = np.array(image, dtype=np.float32)
    inside = np.asarray(brain) != 0
    own = landmarks(out, reference_region(brain, tumor), standard.shape[0])
    for channel, (source, target) in enumerate(zip(own, standard)):
        out[channel][inside] = _piecewise_linear(out[channel][inside], source, target)
    return out


def _piecewise_linear(values: np.ndarray, source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Map ``source`` landmarks onto ``target``, linearly between them and beyond the ends."""
    source = np.maximum.accumulate(source + np.arange(source.size) * 1e-6)  # strictly increasing
    mapped = np.interp(values, source, target)
    low_slope = (target[1] - target[0]) / (source[1] - source[0])
    high_slope = (target[-1] - target[-2]) / (source[-1] - source[-2])
    mapped = np.where(values < source[0], target[0] + (values - source[0]) * low_slope, mapped)
    return np.where(values > source[-1], target[-1] + (values - source[-1]) * high_slope, mapped)


def _tumor(item: dict[str, Any]) -> np.ndarray | None:
    tumor = item["tumor"].numpy()
    return tumor if tumor.any() else None


class HarmonisedDataset(Dataset):
    """A shard dataset whose images are standardised onto ``standard`` as they are read."""

    def __init__(self, index_path: Path, patient_ids: list[str], standard: np.ndarray):
        self.shards = ShardDataset(index_path, patient_ids, with_masks=True)
        self.standard = standard
        self.patient_ids, self.labels = self.shards.patient_ids, self.shards.labels

    def __len__(self) -> int:
        return len(self.shards)

    def __getitem__(self, item: int) -> dict[str, Any]:
        sample = self.shards[item]
        image = standardise(sample["image"].numpy(), sample["brain"].numpy(), _tumor(sample), self.standard)
        return {"image": torch.from_numpy(image), "label": sample["label"], "patient_id": sample["patient_id"]}
