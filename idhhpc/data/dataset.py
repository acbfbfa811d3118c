"""Training-time reader of preprocessed shards (fastMRI-style: index up front, files opened lazily).

HDF5 handles must not cross a ``fork`` or a pickle, so each process opens its own on first
access and remembers its pid; a DataLoader worker that inherits a parent's handles drops them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import h5py
import hdf5plugin  # noqa: F401  registers the Blosc/Zstd filters needed to read compressed shards
import numpy as np
import torch
from torch.utils.data import Dataset

from idhhpc.atomic import sha256_file
from idhhpc.data.cases import PreprocessedCase
from idhhpc.data.geometry import GEOMETRY_KEYS
from idhhpc.data.shards import ShardError


def _load_index(index_path: Path) -> dict[str, Any]:
    try:
        return json.loads(Path(index_path).read_text())
    except (OSError, ValueError) as exc:
        raise ShardError(f"cannot read shard index {index_path}: {exc}") from None


def verify_shards(index_path: Path, index: dict[str, Any] | None = None) -> None:
    """Raise :class:`ShardError` naming the first shard whose sha256 differs from the index."""
    index = index or _load_index(index_path)
    for name, digest in index["shards"].items():
        path = Path(index_path).parent / name
        if not path.is_file() or sha256_file(path) != digest:
            raise ShardError(f"shard {path} is missing or its sha256 differs from {index_path}")


class ShardDataset(Dataset):
    """Patients from ``index.json`` as ``{"image": float32 (C,S,S,S), "label": int, "patient_id": str}``."""

    def __init__(self, index_path: Path, patient_ids: list[str] | None = None,
                 verify: bool = False, with_masks: bool = False):
        self.index_path = Path(index_path)
        self.index = _load_index(self.index_path)
        if verify:
            verify_shards(self.index_path, self.index)
        known = self.index["patients"]
        self.patient_ids = list(known) if patient_ids is None else list(patient_ids)
        unknown = [p for p in self.patient_ids if p not in known]
        if unknown:
            raise KeyError(f"patients not in {self.index_path}: {unknown[:5]}")
        self.with_masks = with_masks
        self._handles: dict[str, h5py.File] = {}
        self._pid = os.getpid()

    @property
    def labels(self) -> np.ndarray:
        """Labels in dataset order (-1 for unlabeled), for samplers and stratification."""
        patients = self.index["patients"]
        return np.array([-1 if patients[p]["label"] is None else patients[p]["label"] for p in self.patient_ids])

    def __len__(self) -> int:
        return len(self.patient_ids)

    def _file(self, shard: str) -> h5py.File:
        if self._pid != os.getpid():
            self._handles, self._pid = {}, os.getpid()
        if shard not in self._handles:
            self._handles[shard] = h5py.File(self.index_path.parent / shard, "r")
        return self._handles[shard]

    def __getitem__(self, item: int) -> dict[str, Any]:
        pid = self.patient_ids[item]
        entry = self.index["patients"][pid]
        h5, row = self._file(entry["shard"]), entry["row"]
        sample = {"image": torch.from_numpy(h5["images"][row].astype(np.float32)),
                  "label": -1 if entry["label"] is None else int(entry["label"]), "patient_id": pid}
        if self.with_masks:
            sample["brain"] = torch.from_numpy(h5["brain"][row])
            sample["tumor"] = torch.from_numpy(h5["tumor"][row])
            sample["has_tumor"] = bool(h5["has_tumor"][row])
        return sample

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_handles"] = {}
        return state

    def close(self) -> None:
        for handle in self._handles.values():
            handle.close()
        self._handles = {}


def read_case(index_path: Path, patient_id: str) -> PreprocessedCase:
    """One patient's full record (image, masks, geometry) as written by preprocessing."""
    index = _load_index(index_path)
    if patient_id not in index["patients"]:
        raise KeyError(f"patient {patient_id} not in {index_path}")
    entry = index["patients"][patient_id]
    with h5py.File(Path(index_path).parent / entry["shard"], "r") as h5:
        row = entry["row"]
        geometry = {key: h5["geometry"][key][row] for key in GEOMETRY_KEYS}
        tumor = h5["tumor"][row] if bool(h5["has_tumor"][row]) else None
        label = int(h5["labels"][row])
        return PreprocessedCase(patient_id, None if label < 0 else label, h5["images"][row],
                                h5["brain"][row], tumor, geometry)
