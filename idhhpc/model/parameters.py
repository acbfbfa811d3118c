"""Parameter bookkeeping for the optimizer, logging and Grad-CAM."""

from __future__ import annotations

from torch import nn

_NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: decay conv/linear weights only.

    Decaying norm scales and biases pulls them towards zero without regularising the function,
    so they go to a group with ``weight_decay=0``. Frozen parameters are left out; empty groups
    are dropped because some optimizers reject them.
    """
    no_decay_ids = {id(p) for p in _norm_and_bias_parameters(model)}
    decay, no_decay = [], []
    for param in trainable_parameters(model):
        (no_decay if id(param) in no_decay_ids else decay).append(param)
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return [group for group in groups if group["params"]]


def _norm_and_bias_parameters(model: nn.Module) -> list[nn.Parameter]:
    found = []
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if isinstance(module, _NORM_TYPES) or name == "bias":
                found.append(param)
    return found


def count_parameters(model: nn.Module) -> dict[str, int]:
    return {
        "total": sum(p.numel() for p in model.parameters()),
        "trainable": sum(p.numel() for p in trainable_parameters(model)),
    }
