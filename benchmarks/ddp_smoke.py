"""NCCL DDP smoke test on the GPUs of one node: every rank trains the same B0-3D and ends equal.

Run by ``benchmarks/gpu_suite.sh`` when a node has two GPUs or more (CPU CI proves DDP with gloo
across the two-node test cluster; this proves the NCCL path the cluster's GPU jobs take):

    python -m torch.distributed.run --standalone --nproc_per_node=2 benchmarks/ddp_smoke.py

Prints one line per rank and exits non-zero when the ranks' weights differ after the steps.
"""

from __future__ import annotations

import os
import time

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from idhhpc.model import build_model


def main(steps: int = 5, size: int = 64, micro_batch: int = 2) -> int:
    dist.init_process_group("nccl")
    rank, local = dist.get_rank(), int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local)
    torch.manual_seed(0)  # the same initial weights on every rank (DDP also broadcasts rank 0's)
    model = DistributedDataParallel(build_model("b0", 4, norm="group").cuda(), device_ids=[local])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    generator = torch.Generator(device="cuda").manual_seed(1 + rank)  # each rank its own batch
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        images = torch.randn(micro_batch, 4, size, size, size, device="cuda", generator=generator)
        labels = torch.randint(0, 2, (micro_batch,), device="cuda", generator=generator)
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(images), labels).backward()
        optimizer.step()
    torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    flat = torch.cat([p.detach().flatten() for p in model.parameters()])
    spread = flat.clone()
    dist.all_reduce(spread, op=dist.ReduceOp.MAX)
    lowest = flat.clone()
    dist.all_reduce(lowest, op=dist.ReduceOp.MIN)
    difference = float((spread - lowest).abs().max())
    print(f"rank {rank}/{dist.get_world_size()} on {torch.cuda.get_device_name(local)}: {steps} DDP steps of "
          f"B0-3D at {size}^3 x {micro_batch} in {seconds:.2f} s; max weight difference across ranks {difference:.1e}",
          flush=True)
    dist.destroy_process_group()
    return 0 if difference == 0.0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
