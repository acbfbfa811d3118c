"""An exported ``model.pt`` without training: the job's network at its seeded initial weights.

Tests of what ``predict`` and the served model do with their inputs (refusals, output folders,
request validation) need a real export, not a good one; training one costs a pipeline run.
"""

from __future__ import annotations

from pathlib import Path

import torch

from idhhpc.config import JobConfig, load_job
from idhhpc.model.network import build_network
from idhhpc.predictor import EXPORT_FORMAT

UNTRAINED_OVERRIDES = ["data.root=unused", "data.phantom=null", "preprocess.size=32",
                       "model={variant: b0, pretrained: none, norm: group}", "explain.layer=net._blocks.2",
                       "train.device=cpu"]


def untrained_config(*overrides: str) -> JobConfig:
    return load_job(None, [*UNTRAINED_OVERRIDES, *overrides])


def write_untrained_export(path: Path, *overrides: str) -> Path:
    """``path`` holds an export of the untrained network of :func:`untrained_config`, threshold 0.5."""
    config = untrained_config(*overrides)
    weights = build_network(config, load_pretrained=False).state_dict()
    payload = {"format": EXPORT_FORMAT, "version": 1, "model": weights, "config": config.model_dump_json(),
               "threshold": 0.5, "threshold_method": "fixed", "temperature": 1.0, "val_auc": 0.5,
               "run": "untrained"}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(payload, path)
    return path
