"""k fold models that share one frozen prefix in memory; only their trainable tails are copies.

The frozen stem and early stages never change during training (no gradient, BatchNorm kept in
eval mode), so the k folds of a cross-validated trial can point at the same modules. Each copy
is still a complete :class:`IDHNet`, so optimizers, ``validate`` and checkpoints work on it as on
any model. For EfficientNet-B7 with two trainable stages the prefix is about a fifth of the
weights; with fewer trainable stages the saving grows towards (k-1)/k.
"""

from __future__ import annotations

import copy
import itertools

import torch
from torch import nn

from idhhpc.model.network import IDHNet


def frozen_tensors(model: IDHNet) -> list[torch.Tensor]:
    modules = model.frozen_modules()
    return [t for m in modules for t in itertools.chain(m.parameters(), m.buffers())]


def shared_prefix_copies(model: IDHNet, k: int) -> list[IDHNet]:
    """``model`` plus ``k-1`` deep copies whose frozen modules are ``model``'s own objects."""
    if k < 1:
        raise ValueError(f"need at least one fold, got k={k}")
    memo = {id(module): module for module in model.frozen_modules()}
    return [model] + [copy.deepcopy(model, memo=dict(memo)) for _ in range(k - 1)]


def tail_state(model: IDHNet) -> dict[str, torch.Tensor]:
    """The state dict without the shared frozen prefix: what differs between folds."""
    frozen = {id(t) for t in frozen_tensors(model)}
    return {name: t.detach().clone() for name, t in model.state_dict(keep_vars=True).items() if id(t) not in frozen}


def load_tail_state(model: IDHNet, state: dict[str, torch.Tensor]) -> None:
    missing, unexpected = model.load_state_dict(state, strict=False)
    frozen_names = set(model.state_dict()) - set(tail_state(model))
    if unexpected or set(missing) - frozen_names:
        raise KeyError(f"tail state does not fit the model: missing {sorted(set(missing) - frozen_names)[:5]}, "
                       f"unexpected {unexpected[:5]}")


def prefix_fingerprint(model: IDHNet) -> float:
    """A cheap checksum of the frozen prefix: a resumed trial must rebuild the same one."""
    return float(sum(t.double().sum() for t in frozen_tensors(model) if t.is_floating_point()))


def parameter_bytes(models: list[nn.Module]) -> int:
    """Bytes of parameters and buffers held by ``models`` together, counting shared storage once."""
    seen: dict[int, int] = {}
    for model in models:
        for tensor in itertools.chain(model.parameters(), model.buffers()):
            storage = tensor.untyped_storage()
            seen[storage.data_ptr()] = storage.nbytes()
    return sum(seen.values())
