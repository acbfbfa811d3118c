"""The frozen-prefix feature cache on disk: HDF5 shards of each patient's prefix output, and their reader.

A cache lives in ``<work>/features/<key>/``, the key a fingerprint of everything the prefix
output depends on (see :mod:`idhhpc.train.prefix_cache`). ``features-00000.h5`` holds
``features`` (patients, 1 + V views, C, s, s, s): view 0 unaugmented, views 1..V augmented,
plus ``labels`` and ``patient_ids``. As with preprocessed shards, a shard is trusted only
through its sidecar (sha256, key, views, planned patients), written after it; both are written
atomically, and ``index.json`` is written last. A killed build therefore leaves shards that a
rerun either keeps (sidecar and checksum match) or rebuilds, and no index that points at them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from idhhpc.atomic import atomic_path, atomic_write_json, sha256_file
from idhhpc.constants import SHARD_INDEX_FILE
from idhhpc.data.augment import AugmentedDataset
from idhhpc.ids import validate_patient_id

FORMAT_VERSION = 1
DRAW_STREAM = 32


def feature_shard_name(shard_index: int) -> str:
    return f"features-{shard_index:05d}"


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def read_index(folder: Path) -> dict[str, Any] | None:
    """The cache's ``index.json``, or None when there is none (or it is unreadable)."""
    return _read_json(Path(folder) / SHARD_INDEX_FILE)


def read_sidecar(folder: Path, shard_index: int) -> dict[str, Any]:
    sidecar = _read_json(Path(folder) / f"{feature_shard_name(shard_index)}.json")
    if sidecar is None:
        raise FileNotFoundError(f"{folder}: sidecar of {feature_shard_name(shard_index)} missing or unreadable")
    return sidecar


def shard_is_current(folder: Path, shard_index: int, key: str, views: int, planned: list[str]) -> bool:
    """The shard and its sidecar exist, were built for ``key``, ``views`` and these patients, and
    the shard's checksum matches its sidecar (a corrupt shard is rebuilt)."""
    name = feature_shard_name(shard_index)
    sidecar = _read_json(Path(folder) / f"{name}.json")
    h5_path = Path(folder) / f"{name}.h5"
    if sidecar is None or not h5_path.is_file():
        return False
    return (sidecar.get("key") == key and sidecar.get("views") == views and sidecar.get("patients") == planned
            and sidecar.get("sha256") == sha256_file(h5_path))


def write_feature_shard(folder: Path, shard_index: int, key: str, patient_ids: list[str], labels: list[int],
                        features: np.ndarray) -> dict[str, Any]:
    """Write ``features`` (patients, views, C, s, s, s) and then its sidecar; returns the sidecar."""
    folder.mkdir(parents=True, exist_ok=True)
    name = feature_shard_name(shard_index)
    ids = [validate_patient_id(p) for p in patient_ids]
    with atomic_path(folder / f"{name}.h5") as tmp, h5py.File(tmp, "w") as h5:
        h5.create_dataset("features", data=features, chunks=(1, 1, *features.shape[2:]))
        h5.create_dataset("labels", data=np.asarray(labels, np.int8))
        h5.create_dataset("patient_ids", data=ids, dtype=h5py.string_dtype())
        h5.attrs.update({"key": key, "format_version": FORMAT_VERSION})
    sidecar = {"shard": f"{name}.h5", "sha256": sha256_file(folder / f"{name}.h5"), "key": key,
               "views": int(features.shape[1]) - 1, "patients": ids, "labels": [int(v) for v in labels],
               "shape": list(features.shape[2:]), "dtype": str(features.dtype)}
    atomic_write_json(folder / f"{name}.json", sidecar)
    return sidecar


def write_index(folder: Path, key: str, views: int, sidecars: list[dict[str, Any]]) -> dict[str, Any]:
    """``index.json``: every shard's checksum and every patient's row, written last."""
    index: dict[str, Any] = {"format_version": FORMAT_VERSION, "key": key, "views": views,
                             "shape": sidecars[0]["shape"] if sidecars else [], "shards": {}, "patients": {}}
    for sidecar in sidecars:
        index["shards"][sidecar["shard"]] = sidecar["sha256"]
        for row, (pid, label) in enumerate(zip(sidecar["patients"], sidecar["labels"])):
            index["patients"][pid] = {"shard": sidecar["shard"], "row": row, "label": label}
    atomic_write_json(Path(folder) / SHARD_INDEX_FILE, index)
    return index


def cache_is_complete(folder: Path, key: str, views: int, patients: list[str]) -> bool:
    """The index is for ``key`` and ``views``, holds exactly ``patients`` and every shard's
    checksum matches it: what the ``features`` stage's output check asks."""
    index = read_index(folder)
    if index is None or index.get("key") != key or index.get("views") != views:
        return False
    if sorted(index["patients"]) != sorted(patients):
        return False
    return all((Path(folder) / name).is_file() and sha256_file(Path(folder) / name) == digest
               for name, digest in index["shards"].items())


def drawn_view(seed: int, epoch: int, index: int, draw: int, views: int) -> int:
    """The augmented view (1..views) an epoch's draw of one item takes, keyed like augmentation."""
    state = np.random.SeedSequence([seed, DRAW_STREAM, epoch, index, draw]).generate_state(1)[0]
    return 1 + int(state) % views


class FeatureDataset(AugmentedDataset):
    """Cached prefix outputs as ``{"image": float32 features, "label", "patient_id"}`` items, so
    the trainer's step, sampler and validation take them exactly as they take volumes.

    It is an :class:`AugmentedDataset` whose augmentations were computed ahead: the trainer and
    the lockstep CV therefore pass it ``(index, draw)`` keys and the epoch instead of wrapping it,
    and a key picks one of the V augmented views, keyed by (seed, epoch, index, draw). A bare
    index (validation) or ``augment=False`` gives the unaugmented view. HDF5 handles are opened
    per process, as in :class:`~idhhpc.data.dataset.ShardDataset`.
    """

    def __init__(self, folder: Path, patient_ids: list[str], augment: bool, seed: int = 0) -> None:
        self.folder = Path(folder)
        index = read_index(self.folder)
        if index is None:
            raise FileNotFoundError(f"no feature cache index in {self.folder}; run the features stage")
        unknown = [p for p in patient_ids if p not in index["patients"]]
        if unknown:
            raise KeyError(f"patients not in the feature cache {self.folder}: {unknown[:5]}")
        self.index, self.patient_ids = index, list(patient_ids)
        self.views = int(index["views"]) if augment else 0
        self.seed, self.epoch = seed, 0
        self._handles: dict[str, h5py.File] = {}
        self._pid = os.getpid()

    @property
    def labels(self) -> list[int]:
        return [int(self.index["patients"][p]["label"]) for p in self.patient_ids]

    def __len__(self) -> int:
        return len(self.patient_ids)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        position, draw = key if isinstance(key, tuple) else (key, None)
        view = 0 if draw is None or not self.views else drawn_view(self.seed, self.epoch, position, draw, self.views)
        pid = self.patient_ids[position]
        entry = self.index["patients"][pid]
        values = self._file(entry["shard"])["features"][entry["row"], view]
        return {"image": torch.from_numpy(values.astype(np.float32, copy=False)), "label": int(entry["label"]),
                "patient_id": pid}

    def _file(self, shard: str) -> h5py.File:
        if self._pid != os.getpid():
            self._handles, self._pid = {}, os.getpid()
        if shard not in self._handles:
            self._handles[shard] = h5py.File(self.folder / shard, "r")
        return self._handles[shard]

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_handles"] = {}
        return state
