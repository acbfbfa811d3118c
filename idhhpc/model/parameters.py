"""Parameter bookkeeping for the optimizer, logging and Grad-CAM."""

from __future__ import annotations

from torch import nn

_NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def parameter_groups(model: nn.Module, weight_decay: float, decoder_lr_scale: float = 1.0) -> list[dict]:
    """AdamW groups: decay conv/linear weights only; a segmentation decoder's at its own rate.

    Decaying norm scales and biases pulls them towards zero without regularising the function,
    so they go to a group with ``weight_decay=0``. The decoder of a multi-task network starts from
    nothing where the encoder already classifies, so ``decoder_lr_scale`` multiplies its rate
    (``lr_scale`` of its groups, read by the schedule); so does the compartment readout's, a
    linear model started at zero that must reach weights of order one in a few hundred steps.
    Frozen parameters are left out; empty groups are dropped because some optimizers reject them.
    """
    no_decay_ids = {id(p) for p in _norm_and_bias_parameters(model)}
    new_parts = [part for part in (getattr(model, "decoder", None), getattr(model, "readout", None))
                 if isinstance(part, nn.Module)]
    scaled_ids = {id(p) for part in new_parts for p in part.parameters()}
    groups = {(decays, scaled): [] for decays in (True, False) for scaled in (False, True)}
    for param in trainable_parameters(model):
        groups[(id(param) not in no_decay_ids, id(param) in scaled_ids)].append(param)
    return [{"params": params, "weight_decay": weight_decay if decays else 0.0,
             **({"lr_scale": decoder_lr_scale} if scaled else {})}
            for (decays, scaled), params in groups.items() if params]


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
