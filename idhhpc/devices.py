"""Where tensors run and in which precision: one policy for training, validation and prediction."""

from __future__ import annotations

import contextlib

import torch


def resolve_device(name: str) -> torch.device:
    """``auto`` is the GPU when there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def resolve_amp(amp: str, device: torch.device | str) -> tuple[torch.dtype | None, bool]:
    """Return (autocast dtype or None, whether a GradScaler is needed).

    'auto' prefers bf16 on CUDA (no scaler: bf16 has fp32's range) and falls back to fp16 with
    a scaler on GPUs without bf16; on CPU it is off, since CPU autocast rarely pays.
    """
    device_type = torch.device(device).type
    if amp == "off":
        return None, False
    if amp == "bf16":
        return torch.bfloat16, False
    if amp == "fp16":
        return torch.float16, True
    if amp == "auto":
        if device_type != "cuda":
            return None, False
        if torch.cuda.is_bf16_supported():
            return torch.bfloat16, False
        return torch.float16, True
    raise ValueError(f"amp must be one of auto, bf16, fp16, off; got {amp!r}")


def autocast_context(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
