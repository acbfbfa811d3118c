"""Jobs across both nodes of the Slurm test cluster (node1, node2: one network namespace each).

What breaks first on a real cluster and never on one node: array tasks that all land on one
host, and a DDP rendezvous taken from the wrong place (127.0.0.1, the submitting host). Here
the two slurmd have different addresses, so a rank on node2 that dialled 127.0.0.1 would reach
its own loopback and time out instead of passing.
"""

from __future__ import annotations

import sys

import cloudpickle
import submitit

from idhhpc.hpc.sacct import sacct_rows
from tests.support.ddp_compare import ONE_RANK, TWO_RANKS, assert_same_fit, max_weight_diff
from tests.support.distributed import fit_toy
from tests.support.file_events import FileArrivals
from tests.support.slurm import node_addresses, slurm_marks, wait_for_final_state

pytestmark = slurm_marks(300)

cloudpickle.register_pickle_by_value(sys.modules[__name__])


def whoami(i: int) -> int:
    return i


def test_array_tasks_land_on_both_nodes(tmp_path):
    assert len(node_addresses()) >= 2, "the test cluster should have two nodes"
    executor = submitit.AutoExecutor(folder=tmp_path / "jobs", cluster="slurm")
    executor.update_parameters(slurm_partition="debug", cpus_per_task=1, mem_gb=1, timeout_min=2,
                               slurm_array_parallelism=4)
    jobs = executor.map_array(whoami, range(4))
    assert [job.result() for job in jobs] == [0, 1, 2, 3]
    array_id = jobs[0].job_id.split("_")[0]
    wait_for_final_state(array_id)
    nodes = {row["NodeList"] for row in sacct_rows([array_id], ("JobID", "NodeList"), timeout_s=20)}
    assert nodes == {"node1", "node2"}, f"array tasks ran on {nodes}"


def test_ddp_fit_across_two_nodes_matches_one_process_and_writes_checkpoints_once(tmp_path):
    """2 nodes x 1 gloo task at micro-batch 2 = 1 process at micro-batch 4 (tolerances: ddp_compare).

    Every rank must rendezvous at the first node of the allocation (submitit's MASTER_ADDR from
    SLURM_JOB_NODELIST, resolved by the node's /etc/hosts to its namespace address), and only
    rank 0 may write: inotify counts each file published in the run dir by any rank on any node,
    and the counts must equal those of the single-process run.
    """
    addresses = node_addresses()
    with FileArrivals(tmp_path / "reference") as reference_writes:
        reference = fit_toy(str(tmp_path / "reference"), ONE_RANK)
    executor = submitit.AutoExecutor(folder=tmp_path / "jobs", cluster="slurm")
    executor.update_parameters(slurm_partition="debug", nodes=2, tasks_per_node=1, cpus_per_task=1, mem_gb=2,
                               timeout_min=5, name="idhhpc-ddp-2nodes")
    with FileArrivals(tmp_path / "run") as run_writes:
        job = executor.submit(fit_toy, str(tmp_path / "run"), TWO_RANKS)
        outcomes = job.results()
        assert wait_for_final_state(job.job_id) == "COMPLETED"
    assert [(o.rank, o.world_size) for o in outcomes] == [(0, 2), (1, 2)]
    assert sorted(o.node for o in outcomes) == ["node1", "node2"], "one task per node"
    first = outcomes[0].node
    assert {o.master_addr for o in outcomes} == {first}, "every rank meets at rank 0's node"
    assert not addresses[first].startswith("127."), addresses
    difference = max_weight_diff(tmp_path / "run", tmp_path / "reference")
    print(f"2 nodes x b=2 vs 1 process x b=4: max |dw| = {difference:.3g}")
    assert_same_fit(outcomes[0].history, tmp_path / "run", reference.history, tmp_path / "reference")
    assert len(set(outcomes[0].rank_checksums)) == 1, "ranks should end with identical models"
    written = run_writes.counts()
    print(f"files published in the run dir, per name: {dict(written)}")
    assert written == reference_writes.counts() and written["last.pt"] > 0
