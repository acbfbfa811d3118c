"""submitit against the real Slurm test cluster (slurm/start-test-cluster.sh).

Pins down what the pipeline relies on: results come back, arrays and dependencies
work, failures carry their stderr, sacct records final states, a GPU request
schedules on the count-only GPU partition, and a preempted Checkpointable job is
requeued and finishes from its checkpoint.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import cloudpickle
import pytest
import submitit
from submitit.slurm.slurm import SlurmJobEnvironment

from tests.support.slurm import (
    sacct_records,
    slurm_marks,
    wait_for_final_state,
)

pytestmark = slurm_marks(120)

# The job imports this module by value: tests are not an importable package in the job.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def square(x: int) -> int:
    return x * x


def write_marker_after(path: str, delay_s: float) -> str:
    time.sleep(delay_s)
    Path(path).write_text("parent done")
    return "parent"


def read_marker(path: str) -> str:
    return Path(path).read_text()


def fail_loudly() -> None:
    print("disk on fire", file=sys.stderr, flush=True)
    raise ValueError("this job fails on purpose")


def visible_gpus() -> str:
    return os.environ.get("CUDA_VISIBLE_DEVICES", "")


class SlowCounter(submitit.helpers.Checkpointable):
    """Counts to `steps` in small sleeps; the count survives preemption via checkpoint()."""

    def __init__(self, steps: int, started_marker: str) -> None:
        self.steps = steps
        self.started_marker = started_marker
        self.done = 0
        self.starts = 0

    def __call__(self) -> tuple[int, int]:
        self.starts += 1
        Path(self.started_marker).write_text(str(self.starts))
        while self.done < self.steps:
            time.sleep(0.25)
            self.done += 1
        return self.done, self.starts


@pytest.fixture
def executor(tmp_path: Path) -> submitit.AutoExecutor:
    ex = submitit.AutoExecutor(folder=tmp_path / "submitit", cluster="slurm")
    ex.update_parameters(slurm_partition="debug", timeout_min=5, cpus_per_task=1, mem_gb=1)
    return ex


def _wait_for_file(path: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear within {timeout_s} s")
        time.sleep(0.2)


def test_function_result_comes_back_and_sacct_says_completed(executor: submitit.AutoExecutor) -> None:
    job = executor.submit(square, 7)
    assert job.result() == 49
    assert wait_for_final_state(job.job_id) == "COMPLETED"
    assert sacct_records(job.job_id)[0]["Partition"] == "debug"


def test_job_array_returns_every_result(executor: submitit.AutoExecutor) -> None:
    jobs = executor.map_array(square, [1, 2, 3])
    assert [job.result() for job in jobs] == [1, 4, 9]
    assert len({job.job_id.split("_")[0] for job in jobs}) == 1
    assert [wait_for_final_state(job.job_id) for job in jobs] == ["COMPLETED"] * 3


def test_dependent_job_starts_after_its_parent(executor: submitit.AutoExecutor, tmp_path: Path) -> None:
    marker = tmp_path / "parent.txt"
    parent = executor.submit(write_marker_after, str(marker), 2.0)
    executor.update_parameters(slurm_additional_parameters={"dependency": f"afterok:{parent.job_id}"})
    child = executor.submit(read_marker, str(marker))
    assert child.result() == "parent done"
    wait_for_final_state(child.job_id)
    parent_end = sacct_records(parent.job_id)[0]["End"]
    child_start = sacct_records(child.job_id)[0]["Start"]
    assert child_start >= parent_end  # ISO timestamps compare as text


def test_failing_job_raises_with_its_stderr(executor: submitit.AutoExecutor) -> None:
    job = executor.submit(fail_loudly)
    with pytest.raises(submitit.core.utils.FailedJobError, match="fails on purpose"):
        job.result()
    assert "disk on fire" in (job.stderr() or "")
    assert wait_for_final_state(job.job_id) == "FAILED"


def test_gpu_request_schedules_on_gpu_partition(executor: submitit.AutoExecutor) -> None:
    executor.update_parameters(slurm_partition="gpu", gpus_per_node=1)
    job = executor.submit(visible_gpus)
    assert job.result() != ""
    assert wait_for_final_state(job.job_id) == "COMPLETED"
    record = sacct_records(job.job_id)[0]
    assert record["Partition"] == "gpu"
    assert "gres/gpu=1" in record["AllocTRES"]


def test_preempted_checkpointable_job_is_requeued_and_finishes(
    executor: submitit.AutoExecutor, tmp_path: Path
) -> None:
    started = tmp_path / "started.txt"
    job = executor.submit(SlowCounter(steps=24, started_marker=str(started)))
    _wait_for_file(started, timeout_s=60)
    time.sleep(1.0)
    # The signal submitit's handler checkpoints and requeues on (USR2 unless overridden);
    # it goes to the job step running Python, as Slurm's preemption signal would.
    subprocess.run(["scancel", "--signal", SlurmJobEnvironment.USR_SIG, job.job_id], check=True)
    done, starts = job.result()
    assert (done, starts) == (24, 2)
    wait_for_final_state(job.job_id)
    history = [record["State"] for record in sacct_records(job.job_id, with_requeues=True)]
    print(f"sacct state history of preempted job {job.job_id}: {history}")
    assert history == ["REQUEUED", "COMPLETED"]
