"""Cross-validation of one configuration: k folds trained in lockstep, one epoch at a time.

After every epoch all k folds have been validated, so a scheduler can judge a configuration on
its mean validation AUC across folds, not on one lucky split. The folds share the frozen prefix
of one network (see ``shared.py``); each has its own tail, optimizer and OneCycle schedule, and
the same training recipe as ``idhhpc.train``: balanced sampling keyed by (seed, epoch), seeded
augmentation, accumulation, AMP, gradient clipping. Given a feature cache (``features``), the
tails train from the cached prefix outputs instead of volumes, as ``cv`` and ``fit`` do.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from idhhpc.config import TrainConfig
from idhhpc.data.augment import AugmentedDataset, make_train_transform
from idhhpc.data.dataset import ShardDataset
from idhhpc.data.feature_cache import FeatureDataset
from idhhpc.devices import resolve_amp, resolve_device
from idhhpc.model.network import IDHNet
from idhhpc.train.loss import make_loss
from idhhpc.train.optim import make_optimizer, make_scaler, make_scheduler
from idhhpc.train.sampler import epoch_batches
from idhhpc.train.seeding import derive_seed
from idhhpc.train.step import Optimization, accumulation_window, training_step
from idhhpc.train.validation import validate
from idhhpc.tune.shared import (
    load_tail_state,
    prefix_fingerprint,
    shared_prefix_copies,
    tail_state,
)

DROPOUT_STREAM = 13
DIVERGED_AUC = 0.0


@dataclass
class _Fold:
    model: IDHNet
    train_ds: Dataset
    val_ds: Dataset
    labels: list[int]
    opt: Optimization


class LockstepCV:
    """Train ``len(folds)`` tails of ``model`` epoch by epoch; ``epoch()`` returns the CV metrics."""

    def __init__(self, model: IDHNet, folds: list[dict[str, list[str]]], index_path: Path,
                 settings: TrainConfig, seed: int = 0, features: Path | None = None) -> None:
        self.settings = settings
        self.seed = seed
        self.features = features
        if features is not None:
            model.read_features()
        self.device = resolve_device(settings.device)
        self.amp_dtype, use_scaler = resolve_amp(settings.amp, self.device)
        self.models = shared_prefix_copies(model.to(self.device), len(folds))
        self.fingerprint = prefix_fingerprint(model)
        self.folds = [self._fold(m, f, index_path, use_scaler) for m, f in zip(self.models, folds)]
        self.epochs_done = 0

    def _fold(self, model: IDHNet, fold: dict[str, list[str]], index_path: Path, use_scaler: bool) -> _Fold:
        train_ds, val_ds = self._datasets(fold, index_path)
        labels = [int(v) for v in train_ds.labels]
        optimizer = make_optimizer(model, self.settings)
        opt = Optimization(model, optimizer, make_scheduler(optimizer, self.settings, len(labels)),
                           make_scaler(use_scaler, self.device), make_loss(self.settings, labels).to(self.device),
                           self.device, self.amp_dtype, self.settings.grad_clip)
        return _Fold(model, train_ds, val_ds, labels, opt)

    def _datasets(self, fold: dict[str, list[str]], index_path: Path) -> tuple[Dataset, Dataset]:
        augment = self.settings.augment != "off"
        if self.features is not None:
            return (FeatureDataset(self.features, fold["train"], augment, self.seed),
                    FeatureDataset(self.features, fold["val"], False, self.seed))
        train_ds: Dataset = ShardDataset(index_path, fold["train"])
        if augment:
            train_ds = AugmentedDataset(train_ds, make_train_transform(self.seed, self.settings.augment), seed=self.seed)
        return train_ds, ShardDataset(index_path, fold["val"])

    def epoch(self) -> dict[str, Any]:
        """Train every fold for one epoch, validate each, return per-fold and mean metrics."""
        epoch = self.epochs_done
        losses, aucs = [], []
        for index, fold in enumerate(self.folds):
            losses.append(self._train_epoch(index, fold, epoch))
            aucs.append(self._validate(fold))
        self.epochs_done += 1
        return cv_metrics(epoch, losses, aucs)

    def _train_epoch(self, index: int, fold: _Fold, epoch: int) -> float:
        if isinstance(fold.train_ds, AugmentedDataset):
            fold.train_ds.set_epoch(epoch)
        batches = epoch_batches(fold.labels, self.seed, epoch, self.settings.micro_batch,
                                balanced=self.settings.balance == "sampler")
        fold.model.train()
        by_draw = isinstance(fold.train_ds, AugmentedDataset)
        total = 0.0
        for step, keys in enumerate(batches):
            torch.manual_seed(derive_seed(self.seed, DROPOUT_STREAM, index, epoch, step))
            batch = default_collate([fold.train_ds[key] if by_draw else fold.train_ds[key[0]] for key in keys])
            window, ends_window = accumulation_window(step, self.settings.accumulate, len(batches))
            total += float(training_step(fold.opt, batch, window, ends_window))
        return total / len(batches)

    def _validate(self, fold: _Fold) -> float:
        """A fold whose network diverged (non-finite outputs) scores 0, the worst AUC, so the
        scheduler drops the configuration instead of the trial crashing and being retried."""
        loader = DataLoader(fold.val_ds, batch_size=self.settings.micro_batch, shuffle=False, num_workers=0)
        try:
            return validate(fold.model, loader, fold.opt.loss_fn, self.device, None).auc
        except ValueError as error:
            if "NaN" not in str(error) and "infinity" not in str(error):
                raise
            return DIVERGED_AUC

    def state_dict(self) -> dict[str, Any]:
        """Tails, optimizers and schedules of every fold; the shared prefix is rebuilt from the seed."""
        return {"epochs_done": self.epochs_done, "prefix_fingerprint": self.fingerprint,
                "folds": [{"tail": tail_state(f.model), "optimizer": f.opt.optimizer.state_dict(),
                           "scheduler": f.opt.scheduler.state_dict(),
                           "scaler": f.opt.scaler.state_dict() if f.opt.scaler else {}} for f in self.folds]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not math.isclose(state["prefix_fingerprint"], self.fingerprint, rel_tol=1e-9, abs_tol=1e-6):
            raise ValueError("checkpoint was trained on another frozen prefix (model seed or weights changed)")
        if len(state["folds"]) != len(self.folds):
            raise ValueError(f"checkpoint has {len(state['folds'])} folds, this trial {len(self.folds)}")
        for fold, saved in zip(self.folds, state["folds"]):
            load_tail_state(fold.model, saved["tail"])
            fold.opt.optimizer.load_state_dict(saved["optimizer"])
            fold.opt.scheduler.load_state_dict(saved["scheduler"])
            if fold.opt.scaler and saved["scaler"]:
                fold.opt.scaler.load_state_dict(saved["scaler"])
        self.epochs_done = int(state["epochs_done"])


def cv_metrics(epoch: int, losses: list[float], aucs: list[float]) -> dict[str, Any]:
    """Mean and spread over folds; a fold whose AUC is undefined (one class) counts as 0.5."""
    clean = [0.5 if math.isnan(a) else a for a in aucs]
    metrics = {"epoch": epoch, "val_auc_mean": float(np.mean(clean)), "val_auc_std": float(np.std(clean)),
               "train_loss_mean": float(np.mean(losses))}
    metrics |= {f"val_auc_fold{i}": float(a) for i, a in enumerate(clean)}
    return metrics
