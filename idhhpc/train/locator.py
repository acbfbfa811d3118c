"""Training the tumour locator (:mod:`idhhpc.model.locator`) on the shards' whole-brain cubes."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import h5py
import numpy as np
import torch
from monai.losses import DiceCELoss

from idhhpc.model.locator import build_locator
from idhhpc.train.seeding import derive_seed

LOCATOR_STREAM = 8
log = logging.getLogger(__name__)


def read_locator_views(index_path: Path, patient_ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The whole-brain cubes and tumour masks of ``patient_ids`` with a mask, from the shards."""
    index = json.loads(Path(index_path).read_text())
    images, masks = [], []
    handles: dict[str, h5py.File] = {}
    try:
        for pid in patient_ids:
            entry = index["patients"][pid]
            h5 = handles.setdefault(entry["shard"], h5py.File(Path(index_path).parent / entry["shard"], "r"))
            if "locator_images" not in h5:
                raise ValueError(f"{h5.filename}: no whole-brain cubes for the locator (set preprocess.locator: true)")
            if bool(h5["has_tumor"][entry["row"]]):
                images.append(h5["locator_images"][entry["row"]].astype(np.float32))
                masks.append(h5["locator_tumor"][entry["row"]])
    finally:
        for handle in handles.values():
            handle.close()
    if not images:
        raise ValueError(f"{index_path}: none of the {len(patient_ids)} patients has a tumour mask to train the locator on")
    return np.stack(images), np.stack(masks)


def train_locator(images: np.ndarray, masks: np.ndarray, seed: int, epochs: int = 30, batch: int = 8,
                  lr: float = 3e-3, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """Fit the locator (Dice + cross-entropy, AdamW, cosine rate, random flips); its state dict.

    Every random choice (initial weights, order, flips) comes from ``seed``.
    """
    generator = torch.Generator().manual_seed(derive_seed(seed, LOCATOR_STREAM))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, LOCATOR_STREAM, 1))
        model = build_locator(images.shape[1]).to(device)
    x_all, y_all = torch.from_numpy(images), torch.from_numpy(masks.astype(np.int64))[:, None]
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * -(-len(x_all) // batch)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=0.1)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True, batch=True)
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(len(x_all), generator=generator)
        total = 0.0
        for start in range(0, len(order), batch):
            pick = order[start:start + batch]
            x, y = x_all[pick], y_all[pick]
            for axis in range(2, 5):
                if bool(torch.rand((), generator=generator) < 0.5):
                    x, y = x.flip(axis), y.flip(axis)
            loss = loss_fn(model(x.to(device)), y.to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total += float(loss.detach()) * len(pick)
        if epoch == 0 or (epoch + 1) % 10 == 0:
            log.info("locator epoch %d/%d: loss %.4f", epoch + 1, epochs, total / len(x_all))
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}
