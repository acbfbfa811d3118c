"""On the real Slurm test cluster: a submitted chain holds its work dir, its finish job closes the
launch run and gives the work dir back, ``--cancel`` stops a chain, and Ray's head address is
the node's Slurm NodeAddr. (Node failures and controller restarts would disturb other users of
the shared cluster: scripts/fault_campaign.py runs them on a private one.)"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import time
from pathlib import Path

from mlflow.tracking import MlflowClient

from idhhpc.hpc.lock import WorkDirLock
from idhhpc.hpc.sacct import FINAL_STATES
from idhhpc.launch import LOCK_BUSY, main
from tests.support.jobs import tiny_overrides
from tests.support.slurm import (
    sacct_records,
    slurm_marks,
    wait_for_final_state,
)

pytestmark = slurm_marks(300)
REPO = Path(__file__).resolve().parents[2]


def launch(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def slurm_args(tmp_path: Path) -> list[str]:
    overrides = tiny_overrides(tmp_path / "work", tmp_path / "cohort", "data.phantom.patients=8",
                               "data.phantom.shape=[24, 24, 16]", "data.min_patients=2")
    return ["--partition", "debug", "-q", *[a for o in overrides for a in ("--set", o)]]


def launch_run_status(work: Path) -> str:
    client = MlflowClient(f"sqlite:///{work.resolve() / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("idhhpc").experiment_id
    [run] = client.search_runs([experiment], filter_string="tags.`idhhpc.kind` = 'launch'")
    return run.info.status


def final_states(job_ids: list[str], timeout_s: float = 120) -> set[str]:
    """The states sacct ends up recording for the jobs (a job cancelled while pending has no
    allocation, so ``wait_for_final_state``'s complete-record rule does not apply)."""
    deadline = time.monotonic() + timeout_s
    while True:
        states = {r["State"] for job_id in job_ids for r in sacct_records(job_id)}
        if states and states <= FINAL_STATES or time.monotonic() > deadline:
            return states
        time.sleep(1)


def test_a_submitted_chain_holds_its_work_dir_until_its_finish_job_ends(tmp_path):
    args = slurm_args(tmp_path)
    code, out, _ = launch(*args, "--stages", "cohort")
    assert code == 0
    holder = WorkDirLock(tmp_path / "work").read()
    assert holder.kind == "slurm" and len(holder.slurm_job_ids) == 2  # cohort and finish
    code, _, err = launch(*args, "--stages", "cohort")
    assert code == LOCK_BUSY and f"Slurm chain {','.join(holder.slurm_job_ids)}" in err and "--cancel" in err
    assert launch_run_status(tmp_path / "work") == "RUNNING"
    finish = holder.slurm_job_ids[-1]
    assert wait_for_final_state(finish, timeout_s=240) == "COMPLETED"
    assert not (tmp_path / "work" / ".idhhpc.lock").exists()
    assert launch_run_status(tmp_path / "work") == "FINISHED"  # closed from the cluster, without --wait


def test_cancel_stops_the_chain_closes_its_runs_and_frees_the_work_dir(tmp_path):
    args = slurm_args(tmp_path)
    code, _, _ = launch(*args, "--stages", "cohort,preprocess,split")
    assert code == 0
    ids = WorkDirLock(tmp_path / "work").read().slurm_job_ids
    code, out, _ = launch(*args, "--cancel")
    assert code == 0 and "cancelled Slurm chain" in out
    assert not (tmp_path / "work" / ".idhhpc.lock").exists()
    assert launch_run_status(tmp_path / "work") == "KILLED"
    assert final_states(ids) <= {"CANCELLED", "COMPLETED"}
    code, out, _ = launch(*args, "--cancel")
    assert code == 1 and "nothing to cancel" in out


def test_ray_head_address_is_the_nodes_slurm_nodeaddr(tmp_path):
    node, address = subprocess.run(["sinfo", "-h", "-N", "-p", "debug", "-o", "%N %o"], capture_output=True,
                                   text=True, check=True).stdout.split()[-2:]  # the last node: not node 1
    override = "RAY_NODE_IP_" + "".join(c if c.isalnum() else "_" for c in node)
    script = tmp_path / "addr.sh"
    script.write_text(f"#!/bin/bash\n. {REPO / 'slurm' / 'node-addr.sh'}\nnode_addr \"$SLURMD_NODENAME\"\n"
                      f"{override}=10.9.8.7 node_addr \"$SLURMD_NODENAME\"\n")
    out = tmp_path / "addr.out"
    subprocess.run(["sbatch", "--wait", "--partition=debug", f"--nodelist={node}", "--time=2", "--mem=100M",
                    f"--output={out}", str(script)],
                   check=True, capture_output=True, text=True, timeout=240, env={**os.environ})
    assert out.read_text().split() == [address, "10.9.8.7"]  # its own namespace's, not `hostname -I`
