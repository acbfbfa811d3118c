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
