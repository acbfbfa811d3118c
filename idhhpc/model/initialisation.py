"""Which weights a network starts from and which of its stages train: one decision, described in words.

The study's recipe (freeze the stem and all but the last two stages) assumes ImageNet features;
applied to random weights it trains a classifier on a frozen random network. So the freezing
follows the weights unless the job says otherwise: with pretrained weights the last two stages
and the head train, without them every stage does. The same :class:`Initialisation` builds the
network, goes into the log line at build time and into the report (:func:`describe_initialisation`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from idhhpc import weights
from idhhpc.config import JobConfig, ModelConfig

NUM_STAGES = 7
"""Stages of MONAI's EfficientNet blocks, the same for b0 to b7."""
ALL_STAGES = -1
"""``trainable_stages`` value that trains everything, stem included."""
STUDY_TRAINABLE_STAGES = 2
"""The study's recipe on pretrained weights: the last two stages plus the head train."""


def default_trainable_stages(pretrained: bool) -> int:
    return STUDY_TRAINABLE_STAGES if pretrained else ALL_STAGES


def num_frozen_stages(num_stages: int, trainable_stages: int) -> int:
    """Stages frozen at the start of ``num_stages`` when ``trainable_stages`` train (-1: none frozen)."""
    if trainable_stages < ALL_STAGES:
        raise ValueError(f"trainable_stages must be -1 (all) or >= 0, got {trainable_stages}")
    if trainable_stages == ALL_STAGES or trainable_stages >= num_stages:
        return 0
    return num_stages - trainable_stages


@dataclass(frozen=True)
class Initialisation:
    """``weights`` is ``imagenet``, ``file`` or ``random``; ``source`` the 2D state dict to inflate
    (None for random); ``note`` says why the job's request was not followed, when it was not."""

    variant: str
    weights: str
    source: Path | None
    trainable_stages: int
    freeze_batchnorm: bool
    calibration_samples: int = 0
    note: str = ""
    norm: str = "batch"

    @property
    def pretrained(self) -> bool:
        return self.source is not None

    @property
    def frozen_stages(self) -> int:
        return num_frozen_stages(NUM_STAGES, self.trainable_stages)

    @property
    def prefix_frozen(self) -> bool:
        """A pretrained stem and first stages that never change: what the feature cache stores."""
        return self.pretrained and self.frozen_stages > 0

    def describe(self) -> str:
        text = f"EfficientNet-{self.variant.upper()} 3D: {self._weights_phrase()}; {self._freezing_phrase()}"
        return f"{self.note}; {text}" if self.note else text

    def _weights_phrase(self) -> str:
        if self.weights == "imagenet":
            return f"ImageNet weights (2D, inflated to 3D) from {self.source}"
        if self.weights == "file":
            return f"pretrained 2D weights inflated to 3D from {self.source}"
        return "random initial weights (no pretrained weights)"

    def _freezing_phrase(self) -> str:
        if self.norm == "group":
            return "every stage trains; GroupNorm (8 groups) instead of BatchNorm (model.norm=group)"
        batchnorm = ("every BatchNorm normalises with running statistics (model.freeze_batchnorm=true)"
                     if self.freeze_batchnorm else "the trained stages' BatchNorm uses batch statistics (train mode)")
        calibrated = (f", BatchNorm statistics first estimated on up to {self.calibration_samples} training volumes"
                      if not self.pretrained and self.calibration_samples else "")
        k = self.frozen_stages
        if k == 0:
            return f"every stage trains{calibrated}; {batchnorm}"
        frozen = f"stem and stages 1-{k} of {NUM_STAGES} frozen" + ("" if self.pretrained else " AT RANDOM WEIGHTS")
        trained = f"stages {k + 1}-{NUM_STAGES} and the head train" if k < NUM_STAGES else "only the head trains"
        return (f"{frozen} (BatchNorm in eval there){calibrated}, {trained} "
                f"(model.trainable_stages={self.trainable_stages}); {batchnorm}")


def resolve_initialisation(model: ModelConfig, download: bool = False) -> Initialisation:
    """The weights and freezing ``model`` asks for, given what the torch hub cache holds.

    ``download`` lets a missing ImageNet file be fetched (building a network); without it nothing
    touches the network (planning, reports). With ``pretrained_fallback: scratch`` weights that
    cannot be had mean every stage trains from random weights; with ``fail`` the build raises
    :class:`~idhhpc.weights.WeightsUnavailable`, naming ``python -m idhhpc.weights fetch``.
    """
    kind, source, note = _weights_source(model, download)
    trainable = model.trainable_stages
    if trainable is None or note:
        trainable = default_trainable_stages(source is not None)
    return Initialisation(model.variant, kind, source, trainable, model.freeze_batchnorm, model.calibration_samples,
                          note, model.norm)


def _weights_source(model: ModelConfig, download: bool) -> tuple[str, Path | None, str]:
    if model.pretrained == "none":
        return "random", None, ""
    if model.pretrained != "imagenet":
        return "file", Path(model.pretrained), ""
    path = weights.cached_path(model.variant)
    if path.is_file():
        return "imagenet", path, ""
    if download:
        try:
            return "imagenet", weights.fetch(model.variant, progress=False), ""
        except weights.WeightsUnavailable:
            if model.pretrained_fallback == "fail":
                raise
    elif model.pretrained_fallback == "fail":
        return "imagenet", path, ""  # planning only: building the network fetches the file or fails
    command = weights.FETCH_COMMAND.format(variant=weights.short_variant(model.variant))
    return "random", None, (f"model.pretrained=imagenet but the weights are neither in {path} nor downloadable "
                            f"(run `{command}` on a login node); model.pretrained_fallback=scratch: "
                            "EVERY STAGE TRAINS FROM RANDOM WEIGHTS")


def describe_initialisation(config: JobConfig) -> str:
    """One line for the report: which weights the job's network starts from and which stages train."""
    return resolve_initialisation(config.model).describe()
