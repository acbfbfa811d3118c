"""In-process preemption: what submitit's signal handler does, minus Slurm and the process exit."""

import os
import signal

import cloudpickle
import pytest
import torch
from torch.utils.data import Dataset

from idhhpc.config import TrainConfig
from idhhpc.train.preemption import TrainingJob
from idhhpc.train.stopping import TrainingInterrupted
from idhhpc.train.trainer import train
from tests.support.toy import TinyConvNet, make_toy_dataset

SETTINGS = TrainConfig(epochs=2, micro_batch=2, accumulate=2, max_lr=1e-2, num_workers=0)


class SignalOnFetch(Dataset):
    """Sends SIGUSR1 to this process when the ``at``-th item is fetched, as Slurm would mid-step."""

    def __init__(self, base, at: int) -> None:
        self.base, self.at, self.fetches = base, at, 0

    @property
    def labels(self):
        return self.base.labels

    def __len__(self):
        return len(self.base)

    def __getitem__(self, index):
        self.fetches += 1
        if self.fetches == self.at:
            os.kill(os.getpid(), signal.SIGUSR1)
        return self.base[index]


def toy_training(run_dir, stop=None, signal_at_fetch=None, on_epoch_end=None):
    torch.manual_seed(0)
    train_ds = make_toy_dataset(9, size=10, seed=1)
    if signal_at_fetch:
        train_ds = SignalOnFetch(train_ds, signal_at_fetch)
    val_ds = make_toy_dataset(6, size=10, seed=2, mutant_share=0.5)
    return train(TinyConvNet(), train_ds, val_ds, SETTINGS, run_dir, stop=stop, on_epoch_end=on_epoch_end)


def _assert_same_weights(path_a, path_b):
    a, b = (torch.load(p, weights_only=True)["model"] for p in (path_a, path_b))
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return toy_training(tmp_path_factory.mktemp("reference"))


def test_signal_during_training_saves_and_resubmission_resumes_exactly(tmp_path, reference):
    job = TrainingJob(toy_training, stop_timeout_s=60)
    resubmissions = []
    previous = signal.signal(signal.SIGUSR1, lambda signum, frame: resubmissions.append(job.checkpoint(tmp_path)))
    try:
        with pytest.raises(TrainingInterrupted):
            job(tmp_path, signal_at_fetch=7)
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert len(resubmissions) == 1 and job.interrupted
    requeued = cloudpickle.loads(cloudpickle.dumps(resubmissions[0]))
    result = requeued.result()
    assert result.history == reference.history
    _assert_same_weights(result.last_checkpoint, reference.last_checkpoint)


def test_checkpoint_called_from_the_training_thread_stops_at_next_boundary(tmp_path, reference):
    job = TrainingJob(toy_training)
    resubmissions = []

    def preempt_after_first_epoch(epoch, metrics):
        if epoch == 0:
            resubmissions.append(job.checkpoint(tmp_path))

    with pytest.raises(TrainingInterrupted) as stopped:
        job(tmp_path, on_epoch_end=preempt_after_first_epoch)
    assert (stopped.value.epoch, stopped.value.micro_step) == (1, 0)
    result = resubmissions[0].result()
    assert result.history == reference.history
    _assert_same_weights(result.last_checkpoint, reference.last_checkpoint)


def test_checkpoint_when_idle_returns_a_resubmission():
    job = TrainingJob(toy_training)
    delayed = job.checkpoint("somewhere")
    assert delayed.function is job and delayed.args == ("somewhere",)


# --- Slurm: preemption is not a time-out -----------------------------------------------------

def _slurm_stamp(seconds_from_now: float) -> str:
    import datetime as dt
    import time

    return dt.datetime.fromtimestamp(time.time() + seconds_from_now).strftime("%Y-%m-%dT%H:%M:%S")


def test_slurm_fields_tell_preemption_from_the_time_limit():
    from idhhpc.train.preemption import classify_signal

    assert classify_signal({"PreemptTime": _slurm_stamp(0), "EndTime": _slurm_stamp(20)}) == "preempted"
    assert classify_signal({"PreemptTime": "None", "EndTime": _slurm_stamp(85)}) == "timed-out"  # USR2@90, early
    assert classify_signal({"PreemptTime": "None", "EndTime": _slurm_stamp(3000)}) == "preempted"  # by hand
    assert classify_signal({"PreemptTime": "None", "EndTime": "Unknown"}) is None  # submitit's rule decides
    assert classify_signal({}) is None


def _count_to(n: int, marker: str, stop=None) -> int:
    """A training function in TrainingJob's contract: resumes from ``marker``, stops on request."""
    import time
    from pathlib import Path

    from idhhpc.train.stopping import TrainingInterrupted

    path = Path(marker)
    done = int(path.read_text()) if path.exists() else 0
    while done < n:
        if stop is not None and stop.is_set():
            raise TrainingInterrupted(path, 0, done)
        time.sleep(0.25)
        done += 1
        path.write_text(str(done))
    return done


@pytest.mark.slurm
@pytest.mark.timeout(300)
def test_preemptions_do_not_use_up_the_time_out_budget_on_slurm(tmp_path):
    """max_timeouts=0 and a 5-minute limit: stock submitit would call the USR2 a time-out and fail
    the job; asking Slurm, it is a preemption, requeued as often as it comes."""
    import subprocess
    import sys
    import time

    import submitit
    from submitit.slurm.slurm import SlurmJobEnvironment

    from idhhpc.hpc.jobcall import stage_call
    from tests.support.slurm import (
        cluster_unavailable_reason,
        sacct_records,
        wait_for_final_state,
    )

    reason = cluster_unavailable_reason()
    if reason:
        pytest.skip(f"Slurm test cluster not up: {reason}")
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    executor = submitit.AutoExecutor(folder=tmp_path / "jobs" / "%j", cluster="slurm", slurm_max_num_timeout=0)
    executor.update_parameters(slurm_partition="debug", timeout_min=5, cpus_per_task=1, mem_gb=1)
    marker = tmp_path / "count.txt"
    job = executor.submit(stage_call(TrainingJob(_count_to), "count", 1), 60, str(marker))
    deadline = time.monotonic() + 120
    while not (marker.exists() and int(marker.read_text() or 0) >= 4):
        assert time.monotonic() < deadline and not job.done(), job.stderr()
        time.sleep(0.2)
    subprocess.run(["scancel", "--signal", SlurmJobEnvironment.USR_SIG, job.job_id], check=True)
    assert job.result() == 60
    wait_for_final_state(job.job_id)
    assert [r["State"] for r in sacct_records(job.job_id, with_requeues=True)] == ["REQUEUED", "COMPLETED"]
    assert "Slurm says this signal means preempted" in (job.stdout() or "") + (job.stderr() or "")
