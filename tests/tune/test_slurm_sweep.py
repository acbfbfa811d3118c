"""The tune stage on the real Slurm test cluster: as a submitit job, and through slurm/ray-on-slurm.sh."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from idhhpc.hpc.pipeline import build_steps
from idhhpc.hpc.runner import submit_to_slurm
from idhhpc.tracking.runs import tracking_uri
from idhhpc.tune.runs import TRIAL_TAG
from idhhpc.tune.trainable import NODE_IP_TAG, SLURM_NODE_TAG
from tests.support.jobs import tiny_job
from tests.support.slurm import node_addresses, slurm_marks, wait_for_final_state

pytestmark = slurm_marks(600, pytest.mark.ray, pytest.mark.slow)
REPO = Path(__file__).resolve().parents[2]
SLURM_SETTINGS = ["hpc.executor=slurm", "hpc.resources.partition=debug", "hpc.resources.cpus_per_task=2",
                  "hpc.resources.mem_gb=4", "hpc.resources.time_min=15", "tune.num_samples=2", "tune.epochs=1"]


def _trial_tags(config) -> list[tuple[dict[str, str], dict[str, str]]]:
    """(params, tags) of every trial run of the sweep."""
    client = MlflowClient(tracking_uri(config))
    experiment = client.get_experiment_by_name(config.tracking.experiment)
    return [(r.data.params, r.data.tags) for r in client.search_runs([experiment.experiment_id])
            if TRIAL_TAG in r.data.tags]


def _trial_params(config) -> list[dict[str, str]]:
    return [params for params, _ in _trial_tags(config)]


def test_tune_stage_as_a_submitit_job_on_partition_debug(workspace):
    config = tiny_job(workspace, *SLURM_SETTINGS)
    records, jobs = submit_to_slurm(build_steps(["tune"]), config, workspace / "work" / "launches" / "slurm")
    assert [r.step for r in records] == ["tune"] and len(jobs) == 1
    state = wait_for_final_state(str(jobs[0].job_id), timeout_s=540)
    assert state == "COMPLETED", jobs[0].stderr()
    summary = jobs[0].result()
    assert summary["trials"] == 2 and summary["errored"] == 0
    assert (workspace / "work" / "best_config.yaml").is_file()
    params = _trial_params(config)
    assert len(params) == 2 and all("train.max_lr" in p for p in params)


def test_ray_on_slurm_script_runs_the_sweep_across_two_nodes(workspace):
    """The head on node1 at its node address, a worker joined from node2; each trial takes a
    node's 2 CPUs, so the two concurrent trials can only run one per node, and their MLflow runs
    say where (the driver joins the head through RAY_ADDRESS, not a local Ray)."""
    config = tiny_job(workspace, *SLURM_SETTINGS, "tune.cpus_per_trial=2")
    job = workspace / "job.yaml"
    job.write_text(config.model_dump_json())  # JSON is YAML
    log = workspace / "ray-on-slurm.out"
    env = {**os.environ, "IDHHPC_PYTHON": sys.executable, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    done = subprocess.run(["sbatch", "--wait", "--partition=debug", "--nodes=2", "--ntasks-per-node=1",
                           "--cpus-per-task=2", "--mem=4G", "--time=15", f"--output={log}", "--chdir", str(REPO),
                           str(REPO / "slurm" / "ray-on-slurm.sh"), "--job", str(job)],
                          env=env, capture_output=True, text=True, timeout=560)
    output = log.read_text() if log.exists() else ""
    assert done.returncode == 0, f"{done.stderr}\n{output[-3000:]}"
    assert "ray-on-slurm: head node1" in output and "Started a local Ray instance" not in output
    trials = _trial_tags(config)
    assert len(trials) == 2 and all("train.max_lr" in params for params, _ in trials)
    addresses = node_addresses()
    placed = sorted((tags[SLURM_NODE_TAG], tags[NODE_IP_TAG]) for _, tags in trials)
    assert placed == [("node1", addresses["node1"]), ("node2", addresses["node2"])], placed
