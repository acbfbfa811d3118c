"""Stage ``evaluate``: the fitted model on the held-out test set, with the threshold from validation."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from idhhpc.config import JobConfig
from idhhpc.data.dataset import ShardDataset
from idhhpc.evaluate.stage import evaluate_predictions
from idhhpc.stages.split import load_splits
from idhhpc.stages.track import stage_run
from idhhpc.stages.train import SELECTION_FILE, build_network, with_best_config
from idhhpc.train.checkpoint import load_checkpoint
from idhhpc.train.optim import resolve_device
from idhhpc.workdir import WorkDir


def load_trained(config: JobConfig, checkpoint: Path, device: torch.device) -> torch.nn.Module:
    model = build_network(config)
    model.load_state_dict(load_checkpoint(checkpoint)["model"])
    return model.to(device).eval()


@torch.no_grad()
def predict_probabilities(model: torch.nn.Module, dataset: Dataset, device: torch.device,
                          batch_size: int = 2) -> np.ndarray:
    """Probability of the mutant class for every item, in dataset order."""
    probs = []
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        logits = model(batch["image"].to(device))
        probs.append(torch.softmax(logits.float(), dim=1)[:, 1].cpu())
    return torch.cat(probs).numpy() if probs else np.zeros(0)


def run_evaluate(config: JobConfig) -> dict[str, Any]:
    config = with_best_config(config)
    work = WorkDir(config.work_dir)
    selection = json.loads((work.checkpoints("fit") / SELECTION_FILE).read_text())
    device = resolve_device(config.train.device)
    model = load_trained(config, Path(selection["checkpoint"]), device)
    test = ShardDataset(work.index, load_splits(config)["test"])
    probs = predict_probabilities(model, test, device, config.train.micro_batch)
    labels = test.labels
    metrics = evaluate_predictions(labels, probs, selection["threshold"], test.patient_ids, work.reports,
                                   history=selection["history"], n_resamples=config.evaluate.bootstrap, seed=config.seed)
    cv = cross_validation_summary(work)
    with stage_run(config, "evaluate") as run:
        run.log_metrics({f"test/{k}": float(v) for k, v in metrics.items() if _finite(v)} | cv)
        for path in sorted(work.reports.glob("*")):
            if path.is_file():
                run.log_artifact(path, "reports")
    return {"metrics": metrics, "cv": cv, "threshold": selection["threshold"]}


def cross_validation_summary(work: WorkDir) -> dict[str, float]:
    """Mean and spread of the folds' best validation AUC, when the cv stage ran."""
    aucs = [json.loads(p.read_text())["val_auc"] for p in sorted(work.root.glob(f"checkpoints/fold-*/{SELECTION_FILE}"))]
    aucs = [a for a in aucs if _finite(a)]
    if not aucs:
        return {}
    return {"cv/mean_auc": float(np.mean(aucs)), "cv/std_auc": float(np.std(aucs)), "cv/folds": float(len(aucs))}


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)
