"""ASHA vs running every trial to its full budget: epochs spent and best mean CV AUC found.

Both sweeps draw the same configurations (random search with one seed) on the same phantom
cohort and folds; only the scheduler differs. Also prints the parameter memory of k fold models
sharing one frozen prefix against k independent models (the cross-validated trainable's saving).

    python benchmarks/tune_efficiency.py --out /tmp/tune-bench --patients 32 --samples 8 --epochs 9

Goal (issue 6): the same best AUC within 0.01 for at most 40 % of the epochs.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import ray

from idhhpc.config import JobConfig, load_job
from idhhpc.model.network import build_model
from idhhpc.stages.cohort import run_cohort
from idhhpc.stages.preprocess import count_shards, run_merge_index, run_preprocess_shard
from idhhpc.stages.split import run_split
from idhhpc.tune.shared import parameter_bytes, shared_prefix_copies
from idhhpc.tune.sweep import run_sweep

SPACE = Path(__file__).resolve().parents[1] / "tune_spaces" / "focal_onecycle.yaml"


def job(root: Path, args: argparse.Namespace, *overrides: str) -> JobConfig:
    return load_job(None, [
        f"work_dir={root / 'work'}", f"data.root={root / 'cohort'}", f"data.phantom.patients={args.patients}",
        "data.phantom.shape=[48,48,32]", "data.min_patients=8", "preprocess.size=32", "split.folds=2",
        "split.test_fraction=0.2", "model.variant=b0", "model.trainable_stages=2", "model.freeze_batchnorm=true", "train.micro_batch=2",
        "train.accumulate=1", "train.augment=false", "train.amp='off'", "train.device=cpu", f"tune.space={SPACE}",
        f"tune.epochs={args.epochs}", f"tune.num_samples={args.samples}", "tune.max_concurrent=2",
        "tune.cpus_per_trial=1", "tune.searcher=random", "tune.grace_period=1",
        f"tune.reduction_factor={args.reduction_factor}", *overrides])


def prepare(root: Path, args: argparse.Namespace) -> None:
    config = job(root, args)
    if config.work_dir.joinpath("splits.json").exists():
        return
    run_cohort(config)
    for shard in range(count_shards(config)):
        run_preprocess_shard(config, shard)
    run_merge_index(config)
    run_split(config)


def sweep(root: Path, args: argparse.Namespace, scheduler: str) -> tuple[int, float, float]:
    copy = root / scheduler
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(root / "work", copy / "work")
    start = time.monotonic()
    summary = run_sweep(job(copy, args, f"tune.scheduler={scheduler}"))
    return summary.epochs_spent, summary.best_val_auc, time.monotonic() - start


def memory_saving(variant: str, k: int) -> tuple[int, int]:
    model = build_model(variant, trainable_stages=2)
    return parameter_bytes(shared_prefix_copies(model, k)), k * parameter_bytes([model])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("/tmp/tune-bench"))
    parser.add_argument("--patients", type=int, default=32)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=9)
    parser.add_argument("--reduction-factor", type=int, default=3)
    parser.add_argument("--memory-variants", default="b0,b7")
    args = parser.parse_args()
    for variant in filter(None, args.memory_variants.split(",")):
        for k in (3, 5):
            shared, independent = memory_saving(variant, k)
            print(f"params {variant} k={k}: shared prefix {shared / 2**20:.1f} MiB vs {k} independent "
                  f"{independent / 2**20:.1f} MiB: ratio {shared / independent:.2f}")
    prepare(args.out, args)
    ray.init(num_cpus=2, include_dashboard=False, _temp_dir=tempfile.mkdtemp(prefix="rb", dir="/tmp"),
             log_to_driver=False)
    try:
        full_epochs, full_auc, full_s = sweep(args.out, args, "fifo")
        asha_epochs, asha_auc, asha_s = sweep(args.out, args, "asha")
    finally:
        ray.shutdown()
    print(f"full budget: {full_epochs} epochs, best mean CV AUC {full_auc:.3f} ({full_s:.0f} s)")
    print(f"ASHA:        {asha_epochs} epochs, best mean CV AUC {asha_auc:.3f} ({asha_s:.0f} s)")
    print(f"epochs ratio ASHA/full {asha_epochs / full_epochs:.2f} (goal <= 0.40); "
          f"AUC difference {asha_auc - full_auc:+.3f} (goal within 0.01)")


if __name__ == "__main__":
    main()
