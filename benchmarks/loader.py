"""Training samples/s from shards vs NIfTI through MONAI each epoch vs a memory-mapped .npy.

    python benchmarks/loader.py [--patients 8] [--shape 240 240 155] [--size 128] [--workers 2]
    python benchmarks/loader.py --compare-compression [--patients 4]

Shards are written with the compression that ships (``PreprocessConfig().compression``, the
default of ``preprocess.compression``) unless ``--compression`` says otherwise. The memmap reads
exactly the float16 bytes a shard stores, uncompressed, through the same DataLoader: the limit
for any file format. ``--compare-compression`` measures write/read speed and size of every shard
compression (the numbers quoted in ``idhhpc.data.shards``).
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import h5py
import numpy as np
import torch
from preprocess import make_cohort, monai_pipeline  # benchmarks/preprocess.py
from torch.utils.data import DataLoader, Dataset

import idhhpc.data.shards as shards_module
from idhhpc.config import PreprocessConfig
from idhhpc.data.dataset import ShardDataset
from idhhpc.data.preprocess import preprocess_case, settings_hash
from idhhpc.data.shards import COMPRESSIONS, build_shard, merge_index, write_shard

MODALITIES = ["FLAIR", "T1", "T1c", "T2"]


class MemmapDataset(Dataset):
    def __init__(self, path: Path):
        self.path, self.array = path, None

    def __len__(self) -> int:
        return np.load(self.path, mmap_mode="r").shape[0]

    def __getitem__(self, item: int) -> dict:
        if self.array is None:
            self.array = np.load(self.path, mmap_mode="r")
        return {"image": torch.from_numpy(self.array[item].astype(np.float32)), "label": 0}


class NiftiDataset(Dataset):
    def __init__(self, cases, size: int):
        self.cases, self.pipeline = cases, monai_pipeline(size)

    def __len__(self) -> int:
        return len(self.cases)

    def __getitem__(self, item: int) -> dict:
        files = [str(p) for p in self.cases[item].images.values()]
        return {"image": self.pipeline({"image": files})["image"].as_tensor(), "label": 0}


def samples_per_second(dataset: Dataset, workers: int, epochs: int) -> float:
    """Best epoch of ``epochs`` (the first also warms workers and the page cache)."""
    loader = DataLoader(dataset, batch_size=1, shuffle=True, num_workers=workers,
                        persistent_workers=workers > 0, generator=torch.Generator().manual_seed(0))
    best = float("inf")
    for _ in range(epochs):
        started = time.perf_counter()
        for batch in loader:
            batch["image"].sum()
        best = min(best, time.perf_counter() - started)
    return len(dataset) / best


def compression_variants() -> dict[str, dict]:
    import hdf5plugin
    variants = {name: shards_module.compression_options(name) for name in COMPRESSIONS}
    for level in (2, 3, 4):
        variants[f"gzip{level}"] = {"compression": "gzip", "compression_opts": level, "shuffle": True}
    variants["zstd-noshuffle"] = dict(hdf5plugin.Blosc(cname="zstd", clevel=3, shuffle=hdf5plugin.Blosc.NOSHUFFLE))
    variants["zstd5"] = dict(hdf5plugin.Blosc(cname="zstd", clevel=5, shuffle=hdf5plugin.Blosc.SHUFFLE))
    variants["Zstd(plain)"] = dict(hdf5plugin.Zstd(clevel=3))
    return variants


def compare_compression(processed, shash: str, out: Path) -> None:
    """Write and read one shard per variant; options are swapped in through ``compression_options``."""
    raw_mb = sum(c.image.nbytes + c.brain.nbytes + c.tumor.nbytes for c in processed) / 1e6
    print(f"{'compression':15s} {'ratio':>6s} {'write MB/s':>11s} {'read MB/s':>10s}   ({raw_mb:.0f} MB raw)")
    original = shards_module.compression_options
    for label, options in compression_variants().items():
        path = out / f"{label}.h5"
        shards_module.compression_options = lambda _name, _options=options: _options
        try:
            started = time.perf_counter()
            write_shard(path, processed, shash, MODALITIES, "none")
            write_s = time.perf_counter() - started
        finally:
            shards_module.compression_options = original
        read_s = float("inf")
        for _ in range(3):
            started = time.perf_counter()
            with h5py.File(path, "r") as h5:
                for row in range(len(processed)):
                    h5["images"][row], h5["brain"][row], h5["tumor"][row]
            read_s = min(read_s, time.perf_counter() - started)
        ratio = raw_mb * 1e6 / path.stat().st_size
        print(f"{label:15s} {ratio:6.2f} {raw_mb / write_s:11.0f} {raw_mb / read_s:10.0f}")


def main() -> None:
    warnings.filterwarnings("ignore", category=FutureWarning)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patients", type=int, default=8)
    parser.add_argument("--shape", type=int, nargs=3, default=(240, 240, 155))
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--compression", default=PreprocessConfig().compression, choices=COMPRESSIONS,
                        help="default: the compression that ships (preprocess.compression)")
    parser.add_argument("--compare-compression", action="store_true")
    args = parser.parse_args()
    settings = PreprocessConfig(size=args.size)
    shash = settings_hash(settings, MODALITIES)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cases = make_cohort(tmp / "raw", args.patients, tuple(args.shape))
        if args.compare_compression:
            compare_compression([preprocess_case(c, settings) for c in cases], shash, tmp)
            return
        build_shard(0, cases, tmp / "shards", settings, MODALITIES, args.compression)
        index = merge_index(tmp / "shards", 1, shash)
        shards = ShardDataset(tmp / "shards" / "index.json")
        with h5py.File(tmp / "shards" / "shard-00000.h5", "r") as h5:
            np.save(tmp / "images.npy", h5["images"][:])
        rates = {
            f"shards ({args.compression}, ShardDataset)": samples_per_second(shards, args.workers, 4),
            "memmap .npy (limit)": samples_per_second(MemmapDataset(tmp / "images.npy"), args.workers, 4),
            "NIfTI + MONAI pipeline per epoch": samples_per_second(NiftiDataset(cases, args.size), args.workers, 2),
        }
    print(f"{len(index['patients'])} patients, {args.workers} workers, batch 1, {args.size}³ float32 out")
    ours = rates[f"shards ({args.compression}, ShardDataset)"]
    for name, rate in rates.items():
        print(f"{name:36s} {rate:8.1f} samples/s   shards relative to this: {ours / rate:6.2f}×")


if __name__ == "__main__":
    main()
