"""Training throughput of one optimizer step setup, fp32 against AMP, printed as a table of ratios.

CPU (default when no GPU): ``--variant b0 --size 48 --accumulate 2``, fp32 vs bf16 autocast.
CUDA: B7 at 128³, effective batch 16, fp32 with TF32 off (the baseline: true fp32) vs fp32 with
TF32 convolutions and matmuls vs AMP vs AMP+channels_last (TF32 off), each under
``set_per_process_memory_fraction`` emulating a 4 GiB card, with peak allocated memory. Every
row names its TF32 setting (``torch.backends.cuda.matmul.allow_tf32`` and
``torch.backends.cudnn.allow_tf32``, read back after setting them); PyTorch's default turns TF32
on for cuDNN convolutions, so an "fp32" row that does not say otherwise is not fp32.

    python benchmarks/train_step.py [--variant b0] [--size 48] [--micro-batch 2] [--accumulate 8] [--steps 3]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import torch

from idhhpc.config import TrainConfig
from idhhpc.devices import resolve_amp
from idhhpc.train.loss import make_loss
from idhhpc.train.optim import make_optimizer, make_scaler
from idhhpc.train.step import Optimization, training_step


@dataclass
class Case:
    name: str
    amp: str
    channels_last: bool
    tf32: bool = False


def parse_args() -> argparse.Namespace:
    cuda = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", default="b7" if cuda else "b0")
    parser.add_argument("--size", type=int, default=128 if cuda else 48)
    parser.add_argument("--micro-batch", type=int, default=2)
    parser.add_argument("--accumulate", type=int, default=8 if cuda else 2)
    parser.add_argument("--steps", type=int, default=20 if cuda else 2, help="optimizer steps timed per case")
    parser.add_argument("--warmup", type=int, default=1, help="optimizer steps run before timing")
    parser.add_argument("--memory-gib", type=float, default=4.0, help="emulated GPU memory (CUDA only)")
    parser.add_argument("--trainable-stages", type=int, default=2)
    return parser.parse_args()


def cases(device: torch.device) -> list[Case]:
    if device.type == "cuda":
        return [Case("fp32", "off", False), Case("fp32 + TF32", "off", False, tf32=True), Case("amp", "auto", False),
                Case("amp+channels_last", "auto", True)]
    return [Case("fp32", "off", False), Case("bf16 autocast", "bf16", False)]


def set_tf32(device: torch.device, enabled: bool) -> str:
    """Set both TF32 switches and return what they read back, for the row's label."""
    if device.type != "cuda":
        return "n/a"
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled
    matmul, conv = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    return "on" if matmul and conv else "off" if not (matmul or conv) else f"matmul {matmul}, conv {conv}"


def run_case(case: Case, args: argparse.Namespace, device: torch.device) -> dict:
    from idhhpc.model import build_model

    torch.manual_seed(0)
    model = build_model(args.variant, trainable_stages=args.trainable_stages, channels_last=case.channels_last).to(device)
    settings = TrainConfig(micro_batch=args.micro_batch, accumulate=args.accumulate, amp=case.amp)
    amp_dtype, use_scaler = resolve_amp(case.amp, device)
    opt = Optimization(model, make_optimizer(model, settings), None, make_scaler(use_scaler, device),
                       make_loss(settings), device, amp_dtype, grad_clip=1.0)
    batch = {"image": torch.randn(args.micro_batch, 4, args.size, args.size, args.size, device=device),
             "label": torch.arange(args.micro_batch, device=device) % 2}
    step = lambda: optimizer_step(model, opt, batch, args.accumulate)
    for _ in range(args.warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    samples = args.steps * args.accumulate * args.micro_batch
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    return {"name": case.name, "samples_per_s": samples / seconds, "peak_gib": peak}


def optimizer_step(model, opt: Optimization, batch: dict, accumulate: int) -> None:
    """One optimizer step: ``accumulate`` micro-steps exactly as the trainer takes them."""
    model.train()
    for micro_step in range(accumulate):
        training_step(opt, batch, accumulate, ends_window=micro_step == accumulate - 1)


def limit_memory(device: torch.device, gib: float) -> None:
    total = torch.cuda.get_device_properties(device).total_memory
    torch.cuda.set_per_process_memory_fraction(min(1.0, gib * 2**30 / total), device)


def print_header(args: argparse.Namespace, device: torch.device) -> None:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device={device} ({name}), torch {torch.__version__}, variant={args.variant}, size={args.size}^3, "
          f"micro_batch={args.micro_batch}, accumulate={args.accumulate}, timed optimizer steps={args.steps}")
    print(f"{'case':<20} {'TF32':>5} {'samples/s':>10} {'vs fp32':>8} {'peak GiB':>9}", flush=True)


def print_row(row: dict, baseline: float) -> None:
    ratio = row["samples_per_s"] / baseline
    print(f"{row['name']:<20} {row['tf32']:>5} {row['samples_per_s']:>10.2f} {ratio:>8.2f} {row['peak_gib']:>9.2f}",
          flush=True)


def main() -> None:
    args = parse_args()
    device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    if device.type == "cuda":
        limit_memory(device, args.memory_gib)
        torch.backends.cudnn.benchmark = True
    print_header(args, device)
    baseline = None
    for case in cases(device):
        tf32 = set_tf32(device, case.tf32)
        try:
            row = run_case(case, args, device)
        except torch.OutOfMemoryError:
            row = {"name": case.name + " (OOM)", "samples_per_s": float("nan"), "peak_gib": float("nan")}
        row["tf32"] = tf32
        baseline = baseline or row["samples_per_s"]
        print_row(row, baseline)
        if device.type == "cuda":
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
