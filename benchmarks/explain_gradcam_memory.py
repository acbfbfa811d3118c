"""Peak GPU memory and time of one 3D Grad-CAM on EfficientNet at 128³, against a plain forward.

Prints, for the head layer (after the frozen prefix) and a layer inside the frozen prefix (which
needs ``explain_mode``), the peak memory as a ratio of an inference forward pass measured in the
same run. Usage: python benchmarks/explain_gradcam_memory.py [--variant b7] [--size 128]
"""

from __future__ import annotations

import argparse
import time

import torch

from idhhpc.explain.gradcam import compute_cam
from idhhpc.model.network import build_model


def _measure(fn) -> tuple[float, float]:
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return time.perf_counter() - start, torch.cuda.max_memory_allocated() / 2**30


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--variant", default="b7")
    parser.add_argument("--size", type=int, default=128)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = build_model(args.variant, trainable_stages=2).cuda().eval()
    image = torch.randn(4, args.size, args.size, args.size, device="cuda")

    def forward() -> None:
        with torch.no_grad():
            model(image[None])

    forward()
    base_s, base_gib = _measure(forward)
    print(f"forward (no_grad): {base_s:.3f} s, peak {base_gib:.2f} GiB")
    for layer in ("net._conv_head", "net._blocks.3"):
        compute_cam(model, image, layer, class_index=1)
        seconds, gib = _measure(lambda: compute_cam(model, image, layer, class_index=1))
        print(f"grad-cam {layer}: {seconds:.3f} s ({seconds / base_s:.1f}x), "
              f"peak {gib:.2f} GiB ({gib / base_gib:.1f}x)")


if __name__ == "__main__":
    main()
