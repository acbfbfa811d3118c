"""The frozen-prefix feature cache: when it applies, its key, building it, and training from it.

With pretrained weights and a frozen prefix, every epoch of every fold and tuning trial would
recompute prefix outputs that are a fixed function of the input. The ``features`` stage computes
them once per patient (plus ``cache.views`` augmented views when training augments) and ``cv``,
``fit`` and ``tune`` train only the tail from them (:func:`training_inputs`, :func:`usable_cache`).
Without augmentation this is the same training as through the whole network (same weights to
float rounding, same validation history: ``tests/train/test_prefix_cache.py``); with it, an epoch
draws one of V precomputed views per patient instead of a fresh augmentation.

The key is a fingerprint of what the prefix output depends on: the shards (their checksums and
settings), the variant, the modalities, the weights file's sha256, the number of frozen stages,
the seed and the augmentation (they make the views) and the stored dtype. Change any of them and the cache is rebuilt
in a new folder; the old one is removed once the new one is complete.
"""

from __future__ import annotations

import functools
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from idhhpc.atomic import sha256_file
from idhhpc.config import JobConfig, fingerprint
from idhhpc.data import feature_cache
from idhhpc.data.augment import AugmentedDataset, make_train_transform
from idhhpc.data.dataset import ShardDataset
from idhhpc.devices import resolve_device
from idhhpc.model.calibrate import calibrated_network
from idhhpc.model.initialisation import resolve_initialisation
from idhhpc.model.network import IDHNet, build_network
from idhhpc.train.seeding import derive_seed
from idhhpc.workdir import WorkDir

log = logging.getLogger(__name__)

VIEW_STREAM = 33


def cache_applies(config: JobConfig) -> bool:
    """Pretrained weights feed a frozen prefix and the cache is not switched off."""
    return config.cache.enabled and resolve_initialisation(config.model).prefix_frozen and not segments(config)


def segments(config: JobConfig) -> bool:
    """The multi-task network trains its decoder on the tumour masks, so it reads volumes and masks
    (its skip taps come from the frozen prefix too, which the cache does not keep)."""
    return config.model.head == "segment+classify"


def cache_sections(config: JobConfig) -> tuple[str, ...]:
    """``("cache",)`` when the cache applies, else nothing: the config sections that a run's
    checkpoints and the sweep's output are tied to then leave ``cache`` out, so a job that never
    uses the cache keeps its config hashes (and its verified outputs) whatever ``cache`` says."""
    return ("cache",) if cache_applies(config) else ()


def cached_views(config: JobConfig) -> int:
    """Augmented views to store: none when training does not augment."""
    return config.cache.views if augments(config) else 0


def augments(config: JobConfig) -> bool:
    return config.train.augment != "off"


def cache_key(config: JobConfig) -> str:
    init = resolve_initialisation(config.model)
    index = json.loads(WorkDir(config.work_dir).index.read_text())
    return fingerprint({"format": feature_cache.FORMAT_VERSION, "shards": index["shards"],
                        "shard_settings": index["settings_hash"], "variant": config.model.variant,
                        "modalities": list(config.data.modalities), "weights": _file_digest(init.source),
                        "frozen_stages": init.frozen_stages, "seed": config.seed, "dtype": config.cache.dtype,
                        "augment": config.train.augment})


def cache_folder(config: JobConfig) -> Path:
    return WorkDir(config.work_dir).features / cache_key(config)


def _file_digest(path: Path | None) -> str:
    if path is None:
        return "random"
    stat = Path(path).stat()
    return _digest(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _digest(path: str, size: int, mtime_ns: int) -> str:
    """sha256 of a weights file, once per process for an unchanged file (B7's is 255 MiB)."""
    return sha256_file(Path(path))


def build_cache(config: JobConfig) -> Path:
    """Compute and store every preprocessed patient's prefix output; shards already current are kept."""
    network = build_network(config).eval()  # reads, or fetches, the weights before they are hashed
    device = resolve_device(config.train.device)
    work, folder, views = WorkDir(config.work_dir), cache_folder(config), cached_views(config)
    key = folder.name
    dataset = ShardDataset(work.index)
    view_seed = derive_seed(config.seed, VIEW_STREAM)
    transform = make_train_transform(view_seed, config.train.augment) if views else None
    augmented = AugmentedDataset(dataset, transform, view_seed) if views else None
    network.to(device)
    sidecars = []
    for shard_index, start in enumerate(range(0, len(dataset), config.cache.shard_size)):
        positions = list(range(start, min(start + config.cache.shard_size, len(dataset))))
        ids = [dataset.patient_ids[p] for p in positions]
        if not feature_cache.shard_is_current(folder, shard_index, key, views, ids):
            batch = config.cache.batch_size or config.train.micro_batch
            outputs = prefix_outputs(network, dataset, augmented, positions, views, batch, device)
            feature_cache.write_feature_shard(folder, shard_index, key, ids, [int(dataset.labels[p]) for p in positions],
                                              outputs.astype(config.cache.dtype))
        sidecars.append(feature_cache.read_sidecar(folder, shard_index))
    feature_cache.write_index(folder, key, views, sidecars)
    _remove_other_caches(work.features, key)
    log.info("feature cache %s: %d patients x %d views of %s", folder, len(dataset), views + 1, sidecars[0]["shape"])
    return folder


@torch.no_grad()
def prefix_outputs(network: IDHNet, dataset: Dataset, augmented: AugmentedDataset | None, positions: list[int],
                   views: int, batch_size: int, device: torch.device) -> np.ndarray:
    """(patients, 1 + views, C, s, s, s) float32: view 0 the volume itself, view v its augmentation
    keyed by (seed, v, patient position)."""
    per_view = []
    for view in range(views + 1):
        if augmented is not None:
            augmented.set_epoch(view)
        outputs = []
        for start in range(0, len(positions), batch_size):
            chunk = positions[start:start + batch_size]
            items = [dataset[p] if view == 0 else augmented[(p, 0)] for p in chunk]
            images = torch.stack([item["image"] for item in items]).to(device)
            outputs.append(network.prefix(images).float().cpu())
        per_view.append(torch.cat(outputs))
    return torch.stack(per_view, dim=1).contiguous().numpy()


def _remove_other_caches(root: Path, key: str) -> None:
    for other in root.iterdir():
        if other.is_dir() and other.name != key:
            log.info("removing the stale feature cache %s", other)
            shutil.rmtree(other, ignore_errors=True)


def usable_cache(config: JobConfig) -> Path | None:
    """The folder to train the tail from, or None to train through the whole network (the
    prefix is not frozen, the features stage has not run, or augmentation has no views)."""
    if not cache_applies(config):
        return None
    folder = cache_folder(config)
    index = feature_cache.read_index(folder)
    if index is None or index.get("key") != folder.name:
        log.warning("the prefix is frozen but %s holds no feature cache: training through the whole network "
                    "(run the features stage to train from the cache)", folder)
        return None
    if augments(config) and not index["views"]:
        log.info("training augments and the feature cache %s has no augmented views: training through the whole "
                 "network (cache.views sets them)", folder)
        return None
    log.info("training the tail from the feature cache %s (%d augmented views)", folder, index["views"])
    return folder


def training_inputs(config: JobConfig, train_ids: list[str], val_ids: list[str]) -> tuple[IDHNet, Dataset, Dataset]:
    """Network, training and validation datasets of one run: from the feature cache when usable
    (the network then reads prefix outputs), else volumes through the whole (calibrated) network."""
    work = WorkDir(config.work_dir)
    folder = usable_cache(config)
    if folder is None:
        masks = segments(config)
        train_ds = ShardDataset(work.index, train_ids, with_masks=masks)
        return calibrated_network(config, train_ds), train_ds, ShardDataset(work.index, val_ids, with_masks=masks)
    network = build_network(config).read_features()
    return (network, feature_cache.FeatureDataset(folder, train_ids, augments(config), config.seed),
            feature_cache.FeatureDataset(folder, val_ids, False, config.seed))
