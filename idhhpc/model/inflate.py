"""ImageNet initialisation of the 3D network by inflating a local 2D EfficientNet state dict.

ImageNet weights exist only for 2D EfficientNets. Following I3D (Carreira & Zisserman, 2017),
each 2D kernel is repeated along depth and divided by the depth so a volume that is constant
along depth gives the 2D response on every slice. The RGB stem becomes an ``in_channels`` stem
whose channels share the RGB mean, scaled so a grey image repeated over all inputs produces the
same stem response as in 2D. The 1000-class ImageNet classifier is dropped.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn

STEM_KEY = "_conv_stem.weight"
CLASSIFIER_PREFIX = "_fc."
COUNTER_SUFFIX = "num_batches_tracked"
"""BatchNorm step counters: files saved without them are fine (they only matter with momentum=None)."""
WRAPPER_KEYS = ("state_dict", "model")
_MONAI_STAGE_INDEX = re.compile(r"^(_blocks)\.\d+(\.\d+\..+)$")
_SHOWN = 5


def load_pretrained_2d(model3d: nn.Module, path: str | Path) -> None:
    """Initialise ``model3d`` (an :class:`~idhhpc.model.network.IDHNet`) in place from a 2D MONAI
    EfficientNetBN state dict file."""
    path = Path(path)
    state_2d = _read_state_dict(path)
    try:
        inflated = inflate_2d_state_dict(state_2d, model3d, model3d.net._conv_stem.in_channels)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None
    model3d.load_state_dict(inflated)


def inflate_2d_state_dict(state_2d: dict, model3d: nn.Module, in_channels: int) -> dict:
    """Return a full ``model3d`` state dict whose backbone comes from ``state_2d``.

    The head classifier ``_fc`` keeps ``model3d``'s own (random) initialisation. Raises
    ``ValueError`` naming the expected variant and the first mismatching keys.
    """
    model_in = model3d.net._conv_stem.in_channels
    if in_channels != model_in:
        raise ValueError(f"in_channels={in_channels} but the 3D model's stem takes {model_in}")
    targets = {k: v for k, v in model3d.net.state_dict().items() if not k.startswith(CLASSIFIER_PREFIX)}
    source = _to_monai_layout(state_2d, targets)
    _check_matches(source, targets, model3d.variant)
    result = model3d.state_dict()
    for key, target in targets.items():
        value = source.get(key, target)  # only counters may be absent (see _check_matches)
        result[f"net.{key}"] = _inflate_tensor(key, value, target, in_channels)
    return result


def _read_state_dict(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"pretrained 2D weights not found: {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    for wrapper in WRAPPER_KEYS:
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict, found {type(state).__name__}")
    return state


def _to_monai_layout(state_2d: dict, targets: dict) -> dict:
    """Accept the flat ``_blocks.<n>.`` keys of lukemelas/EfficientNet-PyTorch files too.

    MONAI nests blocks per stage (``_blocks.<stage>.<n>.``); this renames a flat key only where
    the nested one is absent, so MONAI files pass through unchanged.
    """
    renamed = dict(state_2d)
    for key in targets:
        flat = _MONAI_STAGE_INDEX.sub(r"\1\2", key)
        if key not in renamed and flat != key and flat in renamed:
            renamed[key] = renamed.pop(flat)
    return renamed


def _check_matches(source: dict, targets: dict, variant: str) -> None:
    provided = {k for k in source if not k.startswith(CLASSIFIER_PREFIX)}
    missing = sorted(k for k in set(targets) - provided if not k.endswith(COUNTER_SUFFIX))
    unexpected = sorted(provided - set(targets))
    wrong_shape = [
        f"{k} {tuple(source[k].shape)} vs expected {_expected_2d_shape(k, targets[k])}"
        for k in sorted(set(targets) & provided)
        if tuple(source[k].shape) != _expected_2d_shape(k, targets[k])
    ]
    problems = [
        f"{label} {items[:_SHOWN]}{' …' if len(items) > _SHOWN else ''} ({len(items)} in all)"
        for label, items in (("missing keys", missing), ("unexpected keys", unexpected),
                             ("shape mismatches", wrong_shape))
        if items
    ]
    if problems:
        raise ValueError(f"not a 2D MONAI EfficientNetBN {variant} state dict: " + "; ".join(problems))


def _expected_2d_shape(key: str, target: torch.Tensor) -> tuple[int, ...]:
    shape = tuple(target.shape)
    if target.ndim != 5:
        return shape
    out_ch, in_ch, _, kh, kw = shape
    return (out_ch, 3 if key == STEM_KEY else in_ch, kh, kw)


def _inflate_tensor(key: str, value: torch.Tensor, target: torch.Tensor, in_channels: int) -> torch.Tensor:
    value = value.to(dtype=target.dtype)
    if target.ndim != 5:
        return value.clone()
    if key == STEM_KEY:
        grey = value.mean(dim=1, keepdim=True) * (3.0 / in_channels)
        value = grey.expand(-1, in_channels, -1, -1)
    depth = target.shape[2]
    return value.unsqueeze(2).repeat(1, 1, depth, 1, 1) / depth
