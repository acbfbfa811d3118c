"""Data-parallel training: W ranks at micro-batch b compute what 1 rank computes at micro-batch W·b.

The comparison model (``FrozenPrefixNet``) has a frozen conv + BatchNorm prefix (eval mode, no
gradients, like IDHNet's) and a trainable conv + linear head without BatchNorm: trainable BN
would normalise each rank's half-batch by its own statistics, which one process cannot
reproduce on CPU (SyncBatchNorm, used on GPUs, needs CUDA). Dropout is off. Augmentation is on:
it is keyed by the global draw position, so both runs augment every sample identically.

Tolerance: the runs differ only in float summation order (gradients averaged across ranks vs a
batch mean; validation in shards), so final weights and validation probabilities must agree to
``ATOL`` = 1e-6 absolute (measured: ~1e-8), train/val loss to 1e-6 relative, val AUC exactly
(to 1e-9), and the learning-rate schedule and optimizer step counts exactly.
"""

from __future__ import annotations

import time

import pytest
import submitit
import torch

from idhhpc.train.sampler import epoch_batches, make_sampler
from tests.support.ddp_compare import BASE, ONE_RANK, TWO_RANKS, assert_same_fit, max_weight_diff, weights
from tests.support.distributed import (
    FrozenPrefixNet,
    build_toy_model,
    fit_toy,
    spawn_toy_fits,
)
from tests.support.mlflow_server import free_port

B0 = dict(model="idhnet-b0", size=32)
STOP_AT = 3  # mid-window: the first micro-step of epoch 0's second window is done, its gradient is partial


@pytest.fixture(scope="module")
def one_rank(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("one-rank")
    return fit_toy(str(run_dir), ONE_RANK), run_dir


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    """Both two-rank fits in one spawn (starting a rank costs seconds of imports)."""
    root = tmp_path_factory.mktemp("two-ranks")
    jobs = [dict(run_dir=str(root / "plain"), settings=TWO_RANKS),
            dict(run_dir=str(root / "stopped"), settings=TWO_RANKS, stop_at=STOP_AT, stop_rank=1),
            dict(run_dir=str(root / "b0"), settings=TWO_RANKS, **B0)]
    plain, stopped, b0 = spawn_toy_fits(2, root / "outcomes", free_port(), jobs)
    return {"plain": (plain, root / "plain"), "stopped": (stopped, root / "stopped"), "b0": (b0, root / "b0")}


def test_rank_slices_partition_the_single_process_order():
    labels = [1] * 5 + [0] * 8
    for epoch in range(3):
        single = epoch_batches(labels, seed=4, epoch=epoch, micro_batch=6)
        ranks = [epoch_batches(labels, seed=4, epoch=epoch, micro_batch=2, world_size=3, rank=r) for r in range(3)]
        assert all(len(batches) == len(single) == 3 for batches in ranks)
        for step, batch in enumerate(single):
            assert [key for r in range(3) for key in ranks[r][step]] == batch


def test_one_rank_order_is_the_plain_sampler_order():
    labels = [1] * 4 + [0] * 9
    batches = epoch_batches(labels, seed=2, epoch=1, micro_batch=2)
    assert [i for batch in batches for i, _ in batch] == list(make_sampler(labels, 2, 1, num_samples=14))
    assert [d for batch in batches for _, d in batch] == list(range(14))
    with pytest.raises(ValueError):
        epoch_batches(labels, seed=2, epoch=1, micro_batch=2, world_size=2, rank=2)


def test_frozen_prefix_stays_frozen_in_eval():
    model = FrozenPrefixNet().train()
    assert not model.prefix.training and model.body.training
    assert not any(p.requires_grad for p in model.prefix.parameters())


def test_two_rank_fit_matches_one_rank_at_same_effective_batch(one_rank, two_ranks):
    ref_fit, ref_dir = one_rank
    outcomes, run_dir = two_ranks["plain"]
    assert [o.rank for o in outcomes] == [0, 1] and all(o.world_size == 2 for o in outcomes)
    assert outcomes[0].history == outcomes[1].history
    assert_same_fit(outcomes[0].history, run_dir, ref_fit.history, ref_dir)
    print(f"2 ranks x b=2 vs 1 rank x b=4: max |dw| = {max_weight_diff(run_dir, ref_dir):.3g}")


def test_only_rank_zero_reports_epochs_and_ranks_end_identical(two_ranks):
    for name in ("plain", "stopped", "b0"):
        outcomes, _ = two_ranks[name]
        assert outcomes[0].epoch_callbacks > 0 and outcomes[1].epoch_callbacks == 0
        assert outcomes[0].rank_checksums == outcomes[1].rank_checksums
        assert outcomes[0].rank_checksums[0] == outcomes[0].rank_checksums[1]


def test_project_network_trains_under_ddp_with_its_frozen_prefix(two_ranks, tmp_path):
    """IDHNet-b0 (frozen stem and early stages, trainable last stage and head): DDP sees only the
    trainable parameters, the frozen prefix is bitwise untouched, and every rank ends identical.
    Its trainable BatchNorm normalises per rank on CPU, so it is compared to one process only
    loosely (the difference is printed), not to ``ATOL``."""
    outcomes, run_dir = two_ranks["b0"]
    assert len(outcomes[0].history) == BASE["epochs"]
    torch.manual_seed(0)
    initial = build_toy_model("idhnet-b0").state_dict()
    final = weights(run_dir)
    frozen = [k for k in initial if k.startswith(("net._conv_stem", "net._bn0", "net._blocks.0."))]
    assert frozen and all(torch.equal(initial[k], final[k]) for k in frozen)
    single = fit_toy(str(tmp_path), dict(TWO_RANKS, micro_batch=4), **B0)
    print(f"IDHNet-b0, 2 ranks x b=2 vs 1 rank x b=4 (per-rank BN): max |dw| = {max_weight_diff(run_dir, tmp_path):.3g}, "
          f"val/auc {outcomes[0].history[-1]['val/auc']:.4f} vs {single.history[-1]['val/auc']:.4f}")


def test_stop_on_one_rank_stops_every_rank_and_resume_matches(one_rank, two_ranks):
    ref_fit, ref_dir = one_rank
    outcomes, run_dir = two_ranks["stopped"]
    assert [o.interrupted_at for o in outcomes] == [(0, STOP_AT)] * 2
    assert_same_fit(outcomes[0].history, run_dir, ref_fit.history, ref_dir)


@pytest.mark.slow
def test_submitit_local_executor_with_two_tasks_matches_one_rank(one_rank, tmp_path):
    """The production path: submitit starts the tasks and the process group comes from its environment."""
    executor = submitit.LocalExecutor(folder=tmp_path / "jobs")
    executor.update_parameters(tasks_per_node=2, timeout_min=5)
    job = executor.submit(fit_toy, str(tmp_path / "run"), TWO_RANKS)
    outcomes = job.results()
    assert [(o.rank, o.world_size) for o in outcomes] == [(0, 2), (1, 2)]
    assert_same_fit(outcomes[0].history, tmp_path / "run", one_rank[0].history, one_rank[1])


def _slurm_unavailable() -> str | None:
    from tests.support.slurm import cluster_unavailable_reason

    return cluster_unavailable_reason()


@pytest.mark.slurm
@pytest.mark.timeout(300)
def test_slurm_two_task_fit_matches_one_rank(one_rank, tmp_path):
    reason = _slurm_unavailable()
    if reason is not None:
        pytest.skip(f"Slurm test cluster not up: {reason}")
    import submitit

    executor = submitit.AutoExecutor(folder=tmp_path / "jobs", cluster="slurm")
    executor.update_parameters(slurm_partition="debug", nodes=1, tasks_per_node=2, cpus_per_task=1, mem_gb=4,
                               timeout_min=5, name="idhhpc-ddp-test")
    job = executor.submit(fit_toy, str(tmp_path / "run"), TWO_RANKS)
    outcomes = job.results()
    assert [(o.rank, o.world_size) for o in outcomes] == [(0, 2), (1, 2)]
    assert_same_fit(outcomes[0].history, tmp_path / "run", one_rank[0].history, one_rank[1])
    from tests.support.slurm import wait_for_final_state

    assert wait_for_final_state(job.job_id) == "COMPLETED", "a task failed (e.g. aborted while closing the group)"


@pytest.mark.slurm
@pytest.mark.timeout(400)
@pytest.mark.parametrize("nodes, tasks_per_node", [(1, 2), (2, 1)], ids=["1-node-2-tasks", "2-nodes-1-task"])
def test_slurm_two_task_fit_preempted_requeues_and_matches_one_rank(tmp_path, nodes, tasks_per_node):
    """Slurm's preemption signal reaches every task, on every node; rank 0 requeues, all ranks
    resume from its last.pt (across nodes: the task on node2 reads what node1's rank 0 wrote)."""
    reason = _slurm_unavailable()
    if reason is not None:
        pytest.skip(f"Slurm test cluster not up: {reason}")
    import subprocess

    import submitit
    from submitit.slurm.slurm import SlurmJobEnvironment

    from idhhpc.train.preemption import TrainingJob
    from tests.support.distributed import fit_toy_until_preempted
    from tests.support.slurm import sacct_records, wait_for_final_state

    settings = dict(TWO_RANKS, epochs=6)
    reference = fit_toy(str(tmp_path / "reference"), dict(settings, micro_batch=4))
    executor = submitit.AutoExecutor(folder=tmp_path / "jobs", cluster="slurm")
    executor.update_parameters(slurm_partition="debug", nodes=nodes, tasks_per_node=tasks_per_node, cpus_per_task=1,
                               mem_gb=4 // nodes, timeout_min=5, name="idhhpc-ddp-preempt-test")
    started = tmp_path / "started.txt"
    job = executor.submit(TrainingJob(fit_toy_until_preempted), str(tmp_path / "run"), settings, str(started), 1.5)
    deadline = time.monotonic() + 120
    while not started.exists():
        assert time.monotonic() < deadline, "the fit did not finish its first epoch in time"
        time.sleep(0.2)
    subprocess.run(["scancel", "--signal", SlurmJobEnvironment.USR_SIG, job.job_id], check=True)
    outcomes = job.results()
    wait_for_final_state(job.job_id)
    history = [record["State"] for record in sacct_records(job.job_id, with_requeues=True)]
    print(f"sacct state history of the preempted 2-task fit {job.job_id}: {history}")
    assert history == ["REQUEUED", "COMPLETED"]
    assert [(o.rank, o.world_size) for o in outcomes] == [(0, 2), (1, 2)]
    assert len({o.node for o in outcomes}) == nodes, f"ranks ran on {[o.node for o in outcomes]}"
    assert 0 < outcomes[0].epoch_callbacks < settings["epochs"], "the requeued attempt should resume mid-run"
    assert_same_fit(outcomes[0].history, tmp_path / "run", reference.history, tmp_path / "reference")
