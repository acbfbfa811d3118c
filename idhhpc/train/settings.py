"""Training hyper-parameters as one frozen value, so a run is described by data, not by code."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal


@dataclass(frozen=True)
class TrainSettings:
    epochs: int = 30
    micro_batch: int = 2
    accumulate: int = 8
    max_lr: float = 1e-3
    weight_decay: float = 1e-2
    pct_start: float = 0.3
    div_factor: float = 25.0
    final_div_factor: float = 1e4
    loss: Literal["focal", "ce"] = "focal"
    focal_gamma: float = 2.0
    focal_alpha: float | None = 0.75
    amp: Literal["auto", "bf16", "fp16", "off"] = "auto"
    grad_clip: float | None = 1.0
    num_workers: int = 2
    select_metric: str = "val/auc"
    patience: int = 10
    augment: bool = True
    checkpoint_every_steps: int = 0
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        for name in ("epochs", "micro_batch", "accumulate", "patience"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainSettings.{name} must be >= 1, got {getattr(self, name)}")
        if self.checkpoint_every_steps < 0:
            raise ValueError(f"TrainSettings.checkpoint_every_steps must be >= 0, got {self.checkpoint_every_steps}")
        if self.focal_alpha is not None and not 0.0 <= self.focal_alpha <= 1.0:
            raise ValueError(f"TrainSettings.focal_alpha must lie in [0, 1], got {self.focal_alpha}")

    @property
    def effective_batch(self) -> int:
        return self.micro_batch * self.accumulate

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def higher_is_better(metric: str) -> bool:
    """Loss-like metrics are minimised; everything else (AUC, accuracy, F1) is maximised."""
    return not metric.rsplit("/", 1)[-1].endswith("loss")
