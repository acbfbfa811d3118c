"""The 3D EfficientNet that predicts IDH status, with a frozen prefix that costs no backward memory.

MONAI's ``EfficientNetBN`` supplies the layers; :class:`IDHNet` keeps it as ``self.net`` (so state
dicts keep MONAI's key layout under ``net.``) and runs the forward pass itself. That lets the
frozen stem and early stages run under ``torch.no_grad()``, so they keep no activations for
backward whatever the input (at 128³ that is gigabytes), while ``explain_mode`` can still open
the graph through them for Grad-CAM. The forward pass is ``tail(prefix(x))``: with pretrained
weights the frozen ``prefix`` is a fixed function of the volume, so the feature cache stores its
output once and training runs ``tail`` alone (:meth:`IDHNet.read_features`).
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Iterator

import torch
from monai.networks.nets import EfficientNetBN
from torch import nn
from torch.utils.checkpoint import checkpoint

from idhhpc.config import JobConfig
from idhhpc.constants import MODALITIES
from idhhpc.model.decoder import SegmentationDecoder, decoder_norm, level_channels, resolution_levels
from idhhpc.model.inflate import load_pretrained_2d
from idhhpc.model.readout import CompartmentReadout
from idhhpc.model.initialisation import (
    Initialisation,
    default_trainable_stages,
    num_frozen_stages,
    resolve_initialisation,
)

log = logging.getLogger(__name__)

VARIANTS = tuple(f"b{i}" for i in range(8))


def variant_name(variant: str) -> str:
    """Return MONAI's model name (``efficientnet-b7``) for ``b7`` or ``efficientnet-b7``."""
    short = variant.strip().lower().removeprefix("efficientnet-")
    if short not in VARIANTS:
        raise ValueError(
            f"unknown EfficientNet variant {variant!r}: expected one of {', '.join(VARIANTS)} "
            "(optionally prefixed with 'efficientnet-')"
        )
    return f"efficientnet-{short}"


class IDHNet(nn.Module):
    """MONAI EfficientNetBN whose first stages are frozen feature extractors.

    ``trainable_stages=k`` trains the last ``k`` stages of ``net._blocks`` plus the head
    (``_conv_head``, ``_bn1``, ``_fc``); ``k=0`` trains only the head, ``k=-1`` or ``k`` at least
    the number of stages trains everything, stem included. Frozen modules stay in eval mode so
    their BatchNorm statistics and drop-connect never change.
    """

    def __init__(
        self,
        net: EfficientNetBN,
        variant: str,
        trainable_stages: int = 2,
        activation_checkpointing: bool = False,
        channels_last: bool = False,
        freeze_batchnorm: bool = False,
        decoder: SegmentationDecoder | None = None,
        readout: CompartmentReadout | None = None,
    ) -> None:
        super().__init__()
        if readout is not None and decoder is None:
            raise ValueError("a compartment readout reads the segmentation decoder's compartments: it needs one")
        self.net = net
        self.decoder = decoder
        """The segmentation decoder (``model.head: segment+classify``), or None for the classifier alone."""
        self.readout = readout
        """Linear IDH logits from the predicted compartments (``model.readout: compartments``), or None."""
        self.levels = resolution_levels(net._blocks)
        self.freeze_batchnorm = freeze_batchnorm
        self.variant = variant_name(variant)
        self.activation_checkpointing = activation_checkpointing
        self.channels_last = channels_last
        self.num_frozen_stages = num_frozen_stages(len(net._blocks), trainable_stages)
        self.stem_frozen = self.num_frozen_stages > 0
        self._explaining = False
        self.feature_input = False
        """``forward`` takes prefix outputs instead of volumes (see :meth:`read_features`)."""
        self.score_flips = False
        """Scoring (:func:`idhhpc.predictor.iter_logits`) averages the logits over the volume and
        its flips (``model.tta: flips``); ``forward`` itself is always one pass."""
        self.initialisation: Initialisation | None = None
        """What :func:`build_network` started it from (None when built directly)."""
        for module in self.frozen_modules():
            module.requires_grad_(False)
        if channels_last:
            self.to(memory_format=torch.channels_last_3d)
        self.train()

    def frozen_modules(self) -> list[nn.Module]:
        stem = [self.net._conv_stem, self.net._bn0] if self.stem_frozen else []
        return stem + list(self.net._blocks[: self.num_frozen_stages])

    def train(self, mode: bool = True) -> IDHNet:
        """Switch modes like ``nn.Module.train`` but keep frozen modules in eval mode.

        With ``freeze_batchnorm`` every BatchNorm also normalises with its running statistics
        while its scale and shift still learn: micro-batches of two volumes, whose last stages
        hold a handful of voxels, give batch statistics too noisy to train with.
        """
        super().train(mode)
        for module in self.frozen_modules():
            module.eval()
        if self.freeze_batchnorm:
            for module in self.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return self

    @contextlib.contextmanager
    def explain_mode(self) -> Iterator[IDHNet]:
        """Evaluate with gradients flowing through the frozen prefix (which still never updates).

        Grad-CAM needs the gradient at an arbitrary layer; the frozen prefix normally runs under
        ``no_grad`` and its parameters do not require grad, so inside this context the input is
        made to require grad instead, which builds the graph through every layer.
        """
        was_training = self.training
        self.eval()
        self._explaining = True
        try:
            yield self
        finally:
            self._explaining = False
            self.train(was_training)

    def prefix(self, inputs: torch.Tensor) -> torch.Tensor:
        """The frozen stem and stages (the input itself when nothing is frozen).

        With pretrained weights this is a fixed function of the input, so its output can be
        computed once per patient and stored (the feature cache, stage ``features``).
        """
        x = self._prepare_input(inputs)
        if not self.stem_frozen:
            return x
        with self._frozen_context():
            x = self._stem(x)
            for stage in self.net._blocks[: self.num_frozen_stages]:
                x = stage(x)
        return x

    def tail(self, features: torch.Tensor) -> torch.Tensor:
        """Everything that trains, from the prefix's output to the logits."""
        x = features
        if not self.stem_frozen:
            x = self._stem(x)
        for stage in self.net._blocks[self.num_frozen_stages :]:
            x = self._run_trainable_stage(stage, x)
        return self._head(x)

    def read_features(self, enabled: bool = True) -> IDHNet:
        """Make ``forward`` take prefix outputs (from the feature cache) instead of volumes.

        The state dict stays the whole network's, so checkpoints and exports of a tail trained
        from the cache load into the network that Grad-CAM and prediction run on volumes.
        """
        if enabled and not self.stem_frozen:
            raise ValueError("read_features: nothing is frozen, so there are no prefix features to read")
        self.feature_input = enabled
        return self

    def forward(self, inputs: torch.Tensor, segment: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """IDH logits (B, 2); with ``segment=True`` also the compartment logits (B, 4, *spatial).

        The plain call is what Grad-CAM, the predictor and the classifier-only jobs run (with a
        compartment readout it runs the decoder too, whose output the readout measures); the
        multi-task training step and segmentation scoring pass ``segment=True`` (through a DDP
        wrapper too, which forwards keyword arguments).
        """
        if segment:
            return self._forward_with_segmentation(inputs)
        if self.readout is not None:
            return self._forward_with_segmentation(inputs)[0]
        if self.feature_input:
            return self.tail(self._prepare_input(inputs))
        return self.tail(self.prefix(inputs))

    @property
    def segments(self) -> bool:
        return self.decoder is not None

    def _forward_with_segmentation(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One pass through the encoder that keeps a skip tap per resolution for the decoder.

        Frozen stages run as in :meth:`prefix` (no graph unless explaining); the decoder always trains.
        """
        if self.decoder is None:
            raise ValueError("this network has no segmentation decoder (model.head: classify)")
        if self.feature_input:
            raise ValueError("segmentation needs volumes, not cached prefix features")
        x = self._prepare_input(inputs)
        size, taps = tuple(x.shape[2:]), []
        with self._frozen_context() if self.stem_frozen else contextlib.nullcontext():
            x = self._stem(x)
        for index, stage in enumerate(self.net._blocks):
            if index < self.num_frozen_stages:
                with self._frozen_context():
                    x = stage(x)
            else:
                x = self._run_trainable_stage(stage, x)
            if index in self.levels:
                taps.append(x)
        segment_logits = self.decoder(taps, size)
        logits = self._head(x)
        if self.readout is not None:
            logits = logits + self.readout(inputs, segment_logits)
        return logits, segment_logits

    def _prepare_input(self, inputs: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last_3d)
        if self._explaining and torch.is_grad_enabled() and not inputs.requires_grad:
            inputs = inputs.detach().requires_grad_(True)
        return inputs

    def _frozen_context(self) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext() if self._explaining else torch.no_grad()

    def _run_trainable_stage(self, stage: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Run one trainable stage, recomputing its activations in backward when checkpointing.

        Caveat of checkpointing: the recomputation updates BatchNorm running statistics a second
        time, which slightly shortens their effective momentum.
        """
        if self.activation_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(stage, x, use_reentrant=False)
        return stage(x)

    def _stem(self, x: torch.Tensor) -> torch.Tensor:
        net = self.net
        return net._swish(net._bn0(net._conv_stem(net._conv_stem_padding(x))))

    def _head(self, x: torch.Tensor) -> torch.Tensor:
        net = self.net
        x = net._swish(net._bn1(net._conv_head(net._conv_head_padding(x))))
        x = net._avg_pooling(x).flatten(start_dim=1)
        return net._fc(net._dropout(x))


def build_model(
    variant: str = "b7",
    in_channels: int = len(MODALITIES),
    num_classes: int = 2,
    dropout: float = 0.2,
    trainable_stages: int | None = None,
    activation_checkpointing: bool = False,
    channels_last: bool = False,
    pretrained_2d: str | Path | None = None,
    bn_momentum: float = 0.1,
    freeze_batchnorm: bool = False,
    norm: str = "batch",
    segment: bool = False,
    readout: bool = False,
) -> IDHNet:
    """Build the 3D classifier; ``pretrained_2d`` names a local 2D MONAI state dict to inflate.

    ``trainable_stages=None`` trains every stage of a random network and the last two stages (plus
    the head) of a pretrained one, as :func:`build_network` does for an unset ``model.trainable_stages``.
    ``bn_momentum`` defaults to PyTorch's 0.1 rather than TensorFlow's 0.01 (MONAI's default):
    a fine-tuning run on a few hundred volumes makes too few steps for 0.01 to track the
    trainable stages' statistics, and validation then sees stale ones. The new classifier starts
    near zero (std 0.01), so the first logits are about 0 (loss log 2) instead of MONAI's ±10.
    ``norm="group"`` builds GroupNorm with 8 groups (every EfficientNet width is a multiple of 8).
    ``segment=True`` adds the segmentation decoder (:mod:`idhhpc.model.decoder`) on the same encoder,
    ``readout=True`` the compartment readout on its output (:mod:`idhhpc.model.readout`).
    """
    name = variant_name(variant)
    if trainable_stages is None:
        trainable_stages = default_trainable_stages(pretrained_2d is not None)
    net = EfficientNetBN(
        name, pretrained=False, spatial_dims=3, in_channels=in_channels, num_classes=num_classes,
        norm=("group", {"num_groups": 8}) if norm == "group" else ("batch", {"eps": 1e-3, "momentum": bn_momentum}),
    )
    net._dropout = nn.Dropout(dropout)
    nn.init.normal_(net._fc.weight, std=0.01)
    nn.init.zeros_(net._fc.bias)
    decoder = None
    if segment:
        levels = resolution_levels(net._blocks)
        decoder = SegmentationDecoder(level_channels(net._blocks, levels), decoder_norm(norm))
    compartment_readout = CompartmentReadout(in_channels, num_classes) if readout else None
    model = IDHNet(net, name, trainable_stages, activation_checkpointing, channels_last, freeze_batchnorm, decoder,
                   compartment_readout)
    if pretrained_2d is not None:
        load_pretrained_2d(model, pretrained_2d)
    return model


def build_network(config: JobConfig, load_pretrained: bool = True) -> IDHNet:
    """The job's network, its weights and freezing from :func:`resolve_initialisation` (logged in
    one line); initial weights come from ``config.seed`` (without touching the global RNG), so two
    runs of one config, or a requeued run and an uninterrupted one, start alike.

    ``load_pretrained=False`` builds the same network without reading pretrained weights, for
    trained weights that replace them (the file need not exist where a model is used).
    """
    init = resolve_initialisation(config.model, download=load_pretrained)
    m = config.model
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = build_model(m.variant, len(config.data.modalities) + config.preprocess.extra_channels, dropout=m.dropout,
                            trainable_stages=init.trainable_stages, activation_checkpointing=m.activation_checkpointing,
                            channels_last=m.channels_last, pretrained_2d=init.source if load_pretrained else None,
                            bn_momentum=m.bn_momentum, freeze_batchnorm=init.freeze_batchnorm, norm=m.norm,
                            segment=m.head == "segment+classify", readout=m.readout == "compartments")
    model.initialisation = init
    model.score_flips = m.tta == "flips"
    if load_pretrained:
        doubtful = bool(init.note) or (init.frozen_stages > 0 and not init.pretrained)
        log.log(logging.WARNING if doubtful else logging.INFO, "network: %s", init.describe())
    return model
