"""Training from the frozen-prefix feature cache vs through the whole network: epoch time and a tune sweep.

    python benchmarks/cache.py [--out /tmp/cache-bench] [--patients 48] [--size 64] [--trials 12] [--epochs 10]
                               [--trainable-stages 2] [--skip-sweep]

b0 at ``--size``³ on a phantom cohort with generated "pretrained" weights: a random 2D b0 whose
BatchNorm statistics are estimated on the cohort after inflation (so the frozen prefix's
features depend on the input, as ImageNet's do), freezing as in the study (stem and stages 1-5
frozen, ``--trainable-stages 2``). No augmentation, so both paths train the same networks.
Prints, in one run:

1. seconds per training epoch (train + validate, fold 0) through the network and from the cache
   (both through ``training_inputs``, the function ``cv`` and ``fit`` use; the mean over
   ``--timed-epochs`` epochs after a first one, so one-off setup is not counted), and the
   one-off cost of the ``features`` stage;
2. a sweep of ``--trials`` random configurations of ``tune_spaces/focal_onecycle.yaml`` on 2 folds
   with every trial run to the full budget (FIFO: the same trials either way, so the best
   configurations are comparable), end to end: ``run_tune`` (Ray start, trials, shutdown)
   without the cache, ``run_features`` + ``run_tune`` with it; and the best configuration each found.

On a CPU the tail's own cost decides the epoch ratio: PyTorch's CPU backward of the 3D depthwise
5x5x5 convolutions in stage 6 (1152 channels on 2³ voxels at 64³) costs about as much as the
whole frozen prefix's forward, so with the study's freezing an epoch is only a few times faster;
with ``--trainable-stages 1`` (stage 7 and the head train) the tail is cheap.
On a shared machine run it with ``OMP_NUM_THREADS=1``: two trials at a time with two threads
each oversubscribe two cores and every figure comes out several times slower.

Goals (issue 11): epoch at least 10x faster, sweep at least 5x, same best configuration.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import torch
from monai.networks.nets import EfficientNetBN
from torch.utils.data import DataLoader

from idhhpc.config import JobConfig, load_job
from idhhpc.data.dataset import ShardDataset
from idhhpc.data.splits import load_splits
from idhhpc.model.calibrate import calibrate_batchnorm
from idhhpc.model.network import build_model
from idhhpc.stages.cohort import run_cohort
from idhhpc.stages.features import run_features
from idhhpc.stages.preprocess import count_shards, run_merge_index, run_preprocess_shard
from idhhpc.stages.split import run_split
from idhhpc.stages.tune import run_tune
from idhhpc.train.prefix_cache import training_inputs
from idhhpc.train.trainer import train
from idhhpc.workdir import WorkDir

SPACE = Path(__file__).resolve().parents[1] / "tune_spaces" / "focal_onecycle.yaml"
BATCHNORM_BUFFERS = ("running_mean", "running_var")


def job(root: Path, args: argparse.Namespace, *overrides: str) -> JobConfig:
    return load_job(None, [
        f"work_dir={root / 'work'}", f"data.root={args.out / 'cohort'}", f"data.phantom.patients={args.patients}",
        "data.phantom.shape=[80,80,64]", "data.min_patients=8", f"preprocess.size={args.size}", "split.folds=2",
        f"model={{variant: b0, pretrained: {args.out / 'b0-2d.pt'}, trainable_stages: {args.trainable_stages}}}",
        f"train.micro_batch={args.micro_batch}", f"train.accumulate={args.accumulate}",
        "train.augment=false", "train.amp='off'", f"train.device={args.device}", "train.num_workers=0", f"tune.space={SPACE}",
        f"tune.epochs={args.epochs}", f"tune.num_samples={args.trials}", "tune.max_concurrent=2",
        "tune.cpus_per_trial=1", "tune.searcher=random", "tune.scheduler=fifo", *overrides])


def prepare(args: argparse.Namespace) -> None:
    """Cohort, shards, splits and the generated weights in ``--out/base``, once."""
    config = job(args.out / "base", args)
    if not WorkDir(config.work_dir).splits.exists():
        run_cohort(config)
        for shard in range(count_shards(config)):
            run_preprocess_shard(config, shard)
        run_merge_index(config)
        run_split(config)
    if not (args.out / "b0-2d.pt").exists():
        write_calibrated_2d_weights(config, args.out / "b0-2d.pt")


def write_calibrated_2d_weights(config: JobConfig, path: Path) -> None:
    """A random 2D b0 (MONAI layout) whose BatchNorm statistics are those of its 3D inflation on
    the first training volumes: inflation copies BatchNorm tensors unchanged, so they carry back."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        state = EfficientNetBN("efficientnet-b0", pretrained=False, spatial_dims=2, in_channels=3).state_dict()
    torch.save(state, path)
    model = build_model("b0", pretrained_2d=path)
    volumes = ShardDataset(WorkDir(config.work_dir).index, load_splits(config)["fit"]["train"][:16])
    calibrate_batchnorm(model, (batch["image"] for batch in DataLoader(volumes, batch_size=4)))
    calibrated = model.state_dict()
    state = {k: calibrated[f"net.{k}"].clone() if k.endswith(BATCHNORM_BUFFERS) else v for k, v in state.items()}
    torch.save(state, path)


def copy_work(args: argparse.Namespace, name: str) -> Path:
    root = args.out / name
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(args.out / "base" / "work", root / "work")
    return root


def epoch_seconds(args: argparse.Namespace, cached: bool) -> tuple[float, float, float]:
    """(wall seconds and process CPU seconds per epoch of fold 0, wall seconds spent building the
    cache first). CPU time is the steadier figure on a machine shared with other work."""
    root = copy_work(args, "epoch-cached" if cached else "epoch-full")
    config = job(root, args, f"cache.enabled={str(cached).lower()}", f"train.epochs={args.timed_epochs + 1}",
                 f"train.patience={args.timed_epochs + 1}")
    start = time.perf_counter()
    if cached:
        run_features(config)
    built = time.perf_counter() - start
    fold = load_splits(config)["folds"][0]
    network, train_ds, val_ds = training_inputs(config, fold["train"], fold["val"])
    ends: list[tuple[float, float]] = []
    train(network, train_ds, val_ds, config.train, root / "run", seed=config.seed,
          on_epoch_end=lambda epoch, metrics: ends.append((time.perf_counter(), time.process_time())))
    (wall0, cpu0), (wall1, cpu1) = ends[0], ends[-1]
    return (wall1 - wall0) / args.timed_epochs, (cpu1 - cpu0) / args.timed_epochs, built


def sweep_seconds(args: argparse.Namespace, cached: bool) -> tuple[float, dict, float]:
    root = copy_work(args, "sweep-cached" if cached else "sweep-full")
    config = job(root, args, f"cache.enabled={str(cached).lower()}")
    start = time.perf_counter()
    if cached:
        run_features(config)
    summary = run_tune(config)
    return time.perf_counter() - start, summary["best_config"], summary["best_val_auc"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("/tmp/cache-bench"))
    parser.add_argument("--patients", type=int, default=48)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=10, help="epochs per tuning trial")
    parser.add_argument("--timed-epochs", type=int, default=2, help="epochs timed per path")
    parser.add_argument("--trainable-stages", type=int, default=2, help="2: the study's freezing")
    parser.add_argument("--micro-batch", type=int, default=2)
    parser.add_argument("--accumulate", type=int, default=1)
    parser.add_argument("--skip-sweep", action="store_true")
    parser.add_argument("--device", default="cpu", help="cuda: time the epochs on the GPU (benchmarks/gpu_suite.sh)")
    args = parser.parse_args()
    prepare(args)
    full, full_cpu, _ = epoch_seconds(args, cached=False)
    cached, cached_cpu, built = epoch_seconds(args, cached=True)
    print(f"b0 at {args.size}^3, trainable stages {args.trainable_stages}, {args.patients} phantom patients, "
          f"micro-batch {args.micro_batch} x accumulate {args.accumulate}")
    print(f"epoch (fold 0, train + validate): through the network {full:.2f} s ({full_cpu:.2f} s CPU), from the "
          f"cache {cached:.3f} s ({cached_cpu:.3f} s CPU): {full / cached:.1f}x wall, {full_cpu / cached_cpu:.1f}x CPU "
          f"(goal >= 10x); features stage {built:.1f} s once", flush=True)
    if args.skip_sweep:
        return
    full_s, full_best, full_auc = sweep_seconds(args, cached=False)
    cached_s, cached_best, cached_auc = sweep_seconds(args, cached=True)
    print(f"sweep of {args.trials} trials x 2 folds x {args.epochs} epochs (FIFO), end to end: through the network "
          f"{full_s:.0f} s, with the cache (features stage included) {cached_s:.0f} s: {full_s / cached_s:.1f}x "
          f"(goal >= 5x)")
    print(f"best configuration without the cache (mean CV AUC {full_auc:.3f}): {full_best}")
    print(f"best configuration with the cache    (mean CV AUC {cached_auc:.3f}): {cached_best}")
    print(f"same best configuration: {full_best == cached_best}")


if __name__ == "__main__":
    main()
