"""The segmentation decoder of the multi-task network (``model.head: segment+classify``).

The encoder is the classifier's own EfficientNet: its stages are grouped by resolution, the last
output of each group is a skip connection, and MONAI's ``UNetDecoder`` (the decoder of
``FlexibleUNet``) climbs from the deepest stage back to the input resolution, where MONAI's
``SegmentationHead`` gives one logit per tumour compartment. Why a decoder at all: a dense,
voxel-wise target (necrosis, edema, enhancement, the compartments that carry the IDH phenotype)
trains the shared encoder on every voxel of every patient, where the IDH label gives one bit per
patient (benchmarks/RESULTS.md, "Multi-task").
"""

from __future__ import annotations

import torch
from monai.networks.nets.flexible_unet import SegmentationHead, UNetDecoder
import torch.nn.functional as F
from torch import nn

from idhhpc.constants import TUMOR_LABELS

SEGMENT_CLASSES = len(TUMOR_LABELS)
"""Background and the three compartments (necrosis, edema, enhancing), in TUMOR_LABELS order."""


def resolution_levels(blocks: nn.ModuleList) -> list[int]:
    """Indices of the stages whose output is the last one at its resolution (the skip taps).

    A stage whose first block has stride 2 halves the resolution, so the stage before it ends
    a level; the last stage always does.
    """
    strides = [_first_block(stage).stride for stage in blocks]
    ends = [i - 1 for i in range(1, len(blocks)) if _stride(strides[i]) > 1]
    return [i for i in ends if i >= 0] + [len(blocks) - 1]


def level_channels(blocks: nn.ModuleList, levels: list[int]) -> list[int]:
    return [int(_last_block(blocks[i]).out_channels) for i in levels]


class SegmentationDecoder(nn.Module):
    """UNetDecoder + SegmentationHead over the encoder's taps, one per resolution (stride 2 to 32).

    The decoder climbs to the stride-2 level and the logits are upsampled (trilinear) to the
    input grid: a full-resolution block would triple a CPU training step for a boundary half a
    voxel sharper, and the classifier is what the decoder is for.
    """

    def __init__(self, encoder_channels: list[int], norm: str | tuple) -> None:
        super().__init__()
        channels = tuple(encoder_channels)
        widths = decoder_widths(encoder_channels)
        self.skip_connect = len(channels) - 2
        self.decoder = UNetDecoder(spatial_dims=3, encoder_channels=channels, decoder_channels=widths,
                                   act=("relu", {"inplace": True}), norm=norm, dropout=0.0, bias=False,
                                   upsample="nontrainable", pre_conv="default", interp_mode="nearest",
                                   align_corners=None, is_pad=True)
        self.head = SegmentationHead(spatial_dims=3, in_channels=widths[-1], out_channels=SEGMENT_CLASSES,
                                     kernel_size=3, act=None)

    def forward(self, taps: list[torch.Tensor], size: tuple[int, ...]) -> torch.Tensor:
        logits = self.head(self.decoder(taps, self.skip_connect))
        return F.interpolate(logits, size=size, mode="trilinear", align_corners=False)


def decoder_widths(encoder_channels: list[int]) -> tuple[int, ...]:
    """Each decoder block as wide as the encoder level it climbs to (a symmetric U-Net):
    (112, 40, 24, 16) for B0, (224, 80, 48, 32) for B7. Cheaper than FlexibleUNet's fixed
    (256, 128, 64, 32, 16), which costs more than B0 itself on a CPU."""
    return tuple(reversed(encoder_channels[:-1]))


def compartment_classes(tumor: torch.Tensor) -> torch.Tensor:
    """Tumour label maps (0, 1, 2, 4) → class indices (0..3) in TUMOR_LABELS order, as long."""
    lookup = torch.zeros(max(TUMOR_LABELS) + 1, dtype=torch.long, device=tumor.device)
    for index, label in enumerate(TUMOR_LABELS):
        lookup[label] = index
    return lookup[tumor.long().clamp(0, max(TUMOR_LABELS))]


def decoder_norm(norm: str) -> str | tuple:
    """The decoder normalises as the encoder does: GroupNorm (8 groups) or instance-free BatchNorm."""
    return ("group", {"num_groups": 8}) if norm == "group" else ("batch", {"eps": 1e-3, "momentum": 0.1})


def _first_block(stage: nn.Module) -> nn.Module:
    return stage[0] if isinstance(stage, nn.Sequential) else stage


def _last_block(stage: nn.Module) -> nn.Module:
    return stage[-1] if isinstance(stage, nn.Sequential) else stage


def _stride(stride) -> int:
    return int(stride[0] if isinstance(stride, (tuple, list)) else stride)
