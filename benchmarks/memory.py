"""Training memory of the 3D EfficientNet, measured on CPU, and the micro-batch it allows.

For each configuration this prints parameter, gradient and AdamW-state bytes, the bytes saved
for backward split into a per-sample slope and a fixed part (e.g. bf16 weight copies) from one
training forward at batch b and one at 2b, and the per-sample transient peak (input plus the
largest single layer's input+output, which dominates once the prefix is frozen). Then it plans
the largest micro-batch for several GPU memory budgets at an effective batch of 16.
With ``--device cuda`` it also runs real AdamW steps and prints the allocator's peak beside
the estimate, which checks the model of memory.

    python benchmarks/memory.py                       # B7, 128³ (about 6 min, ~12 GiB RAM)
    python benchmarks/memory.py --size 48 --variant b0
"""

from __future__ import annotations

import argparse
import gc
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from idhhpc.model import build_model, parameter_groups
from idhhpc.model.memory import (
    StaticMemory,
    largest_micro_batch,
    peak_transient_bytes,
    saved_bytes_for_backward,
)

GIB = 1024**3
IN_CHANNELS, NUM_CLASSES, EFFECTIVE_BATCH = 4, 2, 16
BUDGETS_GIB = (3, 4, 6, 8)
CUDA_MICRO_BATCHES = (1, 2, 4, 8, 16)


@dataclass(frozen=True)
class Config:
    label: str
    trainable_stages: int
    autocast: torch.dtype | None
    checkpointing: bool


CONFIGS = (
    Config("(a) full fine-tuning fp32", -1, None, False),
    Config("(b) frozen tail (2 stages)", 2, None, False),
    Config("(c) (b) + autocast bf16", 2, torch.bfloat16, False),
    Config("(d) (c) + act. checkpointing", 2, torch.bfloat16, True),
)
DEFAULT_CONFIG = 2


@dataclass(frozen=True)
class Measurement:
    static: StaticMemory
    per_sample: int
    fixed: int
    transient: int

    def total(self, micro_batch: int) -> int:
        """Conservative: the transient peak is added to, not overlapped with, the saved tensors."""
        return self.static.total + self.fixed + micro_batch * (self.per_sample + self.transient)


def _model(config: Config, variant: str, device: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model(variant, IN_CHANNELS, NUM_CLASSES, trainable_stages=config.trainable_stages,
                        activation_checkpointing=config.checkpointing)
    return model.to(device).train()


def _volume(batch: int, size: int, device: str) -> torch.Tensor:
    generator = torch.Generator().manual_seed(batch)
    return torch.randn(batch, IN_CHANNELS, size, size, size, generator=generator).to(device)


def measure(config: Config, variant: str, size: int, batch: int, device: str = "cpu") -> Measurement:
    model = _model(config, variant, device)
    saved = {}
    for n in (batch, 2 * batch):
        saved[n] = saved_bytes_for_backward(model, _volume(n, size, device), config.autocast)
        gc.collect()
    per_sample = (saved[2 * batch] - saved[batch]) // batch
    transient = peak_transient_bytes(model, _volume(batch, size, device), config.autocast) // batch
    fixed = max(saved[batch] - batch * per_sample, 0)
    return Measurement(StaticMemory.of(model), per_sample, fixed, transient)


def measure_with_fallback(config: Config, variant: str, size: int, batch: int, device: str) -> Measurement:
    """Measure at ``batch``; double it when BatchNorm sees a single value per channel (tiny inputs)."""
    try:
        return measure(config, variant, size, batch, device)
    except ValueError as err:
        if "more than 1 value per channel" not in str(err):
            raise
        print(f"{config.label}: head map is one voxel at batch {batch}, measuring at batch {2 * batch}")
        return measure(config, variant, size, 2 * batch, device)


def cuda_peak_bytes(config: Config, variant: str, size: int, micro_batch: int) -> int:
    """Peak CUDA memory of one full AdamW training step (the second, once optimizer state exists).

    Memory still allocated before the model is built (left by earlier measurements) is subtracted.
    """
    gc.collect()
    torch.cuda.empty_cache()
    baseline = torch.cuda.memory_allocated()
    model = _model(config, variant, "cuda")
    optimizer = torch.optim.AdamW(parameter_groups(model, 0.05), lr=1e-4)
    volume = _volume(micro_batch, size, "cuda")
    target = torch.zeros(micro_batch, dtype=torch.long, device="cuda")
    for step in range(2):
        if step == 1:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        autocast = torch.autocast("cuda", dtype=config.autocast or torch.float32,
                                  enabled=config.autocast is not None)
        with autocast:
            loss = F.cross_entropy(model(volume), target)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - baseline
    del model, optimizer, volume, loss
    gc.collect()
    torch.cuda.empty_cache()
    return peak


def print_cuda_peaks(results: dict[Config, Measurement], variant: str, size: int) -> None:
    """Check the estimate against the allocator's real peak (input volume and workspace included)."""
    print(f"\nCUDA peak of a training step ({torch.cuda.get_device_name()}), GiB: measured / estimated")
    print(f"{'configuration':32} " + " ".join(f"{f'mb={m}':>13}" for m in CUDA_MICRO_BATCHES))
    for config, m in results.items():
        batches = CUDA_MICRO_BATCHES if config.trainable_stages >= 0 else CUDA_MICRO_BATCHES[:1]
        cells = [f"{cuda_peak_bytes(config, variant, size, b) / GIB:6.2f}/{m.total(b) / GIB:<6.2f}"
                 for b in batches]
        print(f"{config.label:32} " + " ".join(cells), flush=True)


def print_table(results: dict[Config, Measurement]) -> None:
    baseline = results[CONFIGS[0]]
    print(f"{'configuration':32} {'params':>8} {'grads':>8} {'AdamW':>8} {'fixed':>8} "
          f"{'saved/smp':>10} {'trans/smp':>10} {'total@1':>8} {'saved×':>7} {'total×':>7}   (GiB)")
    for config, m in results.items():
        print(f"{config.label:32} {m.static.parameters / GIB:8.3f} {m.static.gradients / GIB:8.3f} "
              f"{m.static.optimizer / GIB:8.3f} {m.fixed / GIB:8.3f} {m.per_sample / GIB:10.3f} "
              f"{m.transient / GIB:10.3f} {m.total(1) / GIB:8.3f} {m.per_sample / baseline.per_sample:7.3f} "
              f"{m.total(1) / baseline.total(1):7.3f}")


def print_plan(results: dict[Config, Measurement]) -> None:
    print(f"\nlargest micro-batch (divisor of effective batch {EFFECTIVE_BATCH}; "
          "0 = does not fit; estimate = static + fixed + mb × (saved + transient)):")
    print(f"{'configuration':32} " + " ".join(f"{b:>4} GiB" for b in BUDGETS_GIB))
    for index, (config, m) in enumerate(results.items()):
        if index < 1:
            continue
        fits = [largest_micro_batch(b * GIB, m.total(0), m.per_sample + m.transient, EFFECTIVE_BATCH)
                for b in BUDGETS_GIB]
        marker = " (default)" if index == DEFAULT_CONFIG else ""
        print(f"{(config.label + marker):32} " + " ".join(f"{f:>8}" for f in fits))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=128, help="cube edge of the input volume")
    parser.add_argument("--variant", default="b7", help="EfficientNet variant b0..b7")
    parser.add_argument("--batch", type=int, default=1,
                        help="measure at batch B and 2B (doubled automatically for tiny inputs)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu",
                        help="'cuda' also measures the allocator's peak of real AdamW steps")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"EfficientNet-{args.variant} 3D, {IN_CHANNELS}×{args.size}³, {NUM_CLASSES} classes, {args.device}")
    results = {
        config: measure_with_fallback(config, args.variant, args.size, args.batch, args.device)
        for config in CONFIGS
    }
    print_table(results)
    print_plan(results)
    if args.device == "cuda":
        print_cuda_peaks(results, args.variant, args.size)


if __name__ == "__main__":
    main()
