"""Seeds derived from keys, and capture/restore of every global RNG for exact resume."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def derive_seed(*keys: int) -> int:
    """A well-mixed 63-bit seed that is a pure function of ``keys`` (e.g. seed, epoch, step)."""
    state = np.random.SeedSequence([int(k) for k in keys]).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1]))


def seeded_generator(*keys: int) -> torch.Generator:
    generator = torch.Generator()
    generator.manual_seed(derive_seed(*keys))
    return generator


def capture_rng_state() -> dict[str, Any]:
    """Every global RNG as plain lists and tensors, so ``torch.load(weights_only=True)`` reads it."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": {"version": version, "state": list(internal), "gauss": gauss},
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
    npy = state["numpy"]
    np.random.set_state((npy["kind"], npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"], npy["cached"]))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
