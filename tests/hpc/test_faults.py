"""The fault campaign's cases that fit on one small machine (the rest: scripts/fault_campaign.py).

Each case disturbs a launch of the tiny job (4 epochs) for real, checks that the message names
the cause and that no partly written file is taken as valid, relaunches, and requires the
relaunch to end with exactly the test metrics, predictions and model weights of an undisturbed
run with the same seed (the module's reference). Relaunches run in-process (debug executor);
the faulted launches use the local executor where the fault needs job processes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from idhhpc.launch import main
from idhhpc.workdir import WorkDir
from tests.support.faults import (
    Tmpfs,
    copy_prefix,
    flip_byte,
    launch_argv,
    lock_groups,
    partial_files,
    result_differences,
    running_as_root,
    shards_consistent,
    start_launcher,
    task_pids,
    torch_threads,
    truncate_half,
    wait_for_job_line,
    wait_until_gone,
)
from tests.support.mlflow_server import free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
EPOCH_LINE = r"idhhpc\.train\.trainer: epoch 1/4"
needs_root = pytest.mark.skipif(not running_as_root(), reason="mounting a small tmpfs needs root (CI has it)")


def relaunch(work: Path, cohort: Path, *extra: str) -> int:
    with torch_threads():
        return main(launch_argv(work, cohort, *extra))


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, Path]:
    """The undisturbed run every case is compared with (in-process, same seed and threads)."""
    root = tmp_path_factory.mktemp("reference")
    work, cohort = root / "work", root / "cohort"
    assert relaunch(work, cohort) == 0
    return work, cohort


def launch_runs(work: Path) -> dict[str, tuple[str, list[str]]]:
    """Every launch run of the work dir's MLflow store: id -> (status, statuses of its child runs)."""
    client = MlflowClient(f"sqlite:///{work.resolve() / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("idhhpc").experiment_id
    runs = client.search_runs([experiment])
    parents = {r.info.run_id: r.info.status for r in runs if r.data.tags.get("idhhpc.kind") == "launch"}
    return {run_id: (status, [r.info.status for r in runs if r.data.tags.get("mlflow.parentRunId") == run_id])
            for run_id, status in parents.items()}


def test_sigterm_mid_training_stops_every_process_and_the_relaunch_resumes(reference, tmp_path):
    ref_work, cohort = reference
    work = tmp_path / "work"
    copy_prefix(ref_work, work)
    launcher = start_launcher(launch_argv(work, cohort, executor="local"), tmp_path / "launcher.log")
    cv_log = wait_for_job_line(work, EPOCH_LINE, process=launcher)
    groups = list(lock_groups(work))
    launcher.send_signal(signal.SIGTERM)
    assert launcher.wait(timeout=60) == -signal.SIGTERM  # it ends like the signal, as a shell expects
    assert groups and wait_until_gone(groups, timeout_s=0) == []  # nothing left once the launcher is gone
    assert "saving last.pt at the next micro-step" in cv_log.read_text()
    assert "interrupted by SIGTERM" in (tmp_path / "launcher.log").read_text()
    assert not WorkDir(work).lock.exists()
    [(status, children)] = launch_runs(work).values()
    assert status == "KILLED" and children and set(children) == {"KILLED"}, children
    assert relaunch(work, cohort) == 0
    assert result_differences(work, ref_work) == [] and partial_files(work) == []


def test_kill_9_of_the_launcher_then_of_a_training_job(reference, tmp_path, caplog):
    """The launcher killed outright during preprocessing (its jobs die with it), then a training
    job's task killed outright (the launcher says so); each relaunch carries on."""
    ref_work, cohort = reference
    work = tmp_path / "work"
    launcher = start_launcher(launch_argv(work, cohort, executor="local"), tmp_path / "first.log")
    wait_for_job_line(work, r"preprocess: started", process=launcher)
    groups = list(lock_groups(work))
    launcher.kill()
    launcher.wait(timeout=30)
    assert wait_until_gone(groups) == []  # the kernel's SIGTERM (PDEATHSIG) ended the orphans
    assert shards_consistent(work) == [] and not (work / "shards" / "index.json").exists()

    seen = set((work / "launches").glob("*/*/*_log.out"))
    launcher = start_launcher(launch_argv(work, cohort, executor="local"), tmp_path / "second.log")
    wait_for_job_line(work, EPOCH_LINE, process=launcher, skip=seen)
    pgid = next(g for g, step in lock_groups(work).items() if step == "cv")
    for pid in task_pids(pgid):
        os.kill(pid, signal.SIGKILL)
    assert launcher.wait(timeout=120) == 2
    text = (tmp_path / "second.log").read_text()
    assert "took over the lock of a launch by" in text and "is gone" in text
    assert "stage cv failed" in text and "was ended by SIGKILL" in text, text[-3000:]
    assert relaunch(work, cohort) == 0
    assert result_differences(work, ref_work) == [] and partial_files(work) == []


def test_mlflow_server_down_for_a_whole_launch(reference, tmp_path, caplog):
    ref_work, cohort = reference
    work = tmp_path / "work"
    copy_prefix(ref_work, work)
    dead = f"http://127.0.0.1:{free_port()}"
    with caplog.at_level(logging.WARNING):
        assert relaunch(work, cohort, f"tracking.uri={dead}") == 0
    assert "MLflow tracking server unreachable" in caplog.text
    assert list((work / "tracking-spool").rglob("*")), "the records wait in the spool for the server"
    assert result_differences(work, ref_work) == []


@needs_root
def test_full_file_system_during_preprocessing(reference, tmp_path):
    ref_work, cohort = reference
    store = f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}"
    last = (ref_work / "checkpoints" / "fold-0" / "last.pt").stat().st_size
    with Tmpfs(tmp_path / "fs", size_mb=(8 * last >> 20) + 64) as fs:
        work = fs.mountpoint / "work"
        with torch_threads():
            assert main([*launch_argv(work, cohort, store), "--stages", "cohort"]) == 0
        fs.fill(leave_bytes=256 << 10)
        with torch_threads(), _stderr(tmp_path / "full.log"):
            assert main(launch_argv(work, cohort, store, executor="local")) == 2
        message = (tmp_path / "full.log").read_text()
        assert "stage preprocess failed" in message and "is full or over quota" in message, message[-3000:]
        assert shards_consistent(work) == [] and not (work / "shards" / "index.json").exists()
        fs.unfill()
        assert relaunch(work, cohort, store) == 0
        assert partial_files(work) == []
        assert result_differences(work, ref_work) == []


@needs_root
def test_full_file_system_during_checkpointing(reference, tmp_path):
    """Room for one more last.pt but not two: the second save fails, the first stays intact."""
    ref_work, cohort = reference
    store = f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}"
    last = (ref_work / "checkpoints" / "fold-0" / "last.pt").stat().st_size
    with Tmpfs(tmp_path / "fs", size_mb=(8 * last >> 20) + 64) as fs:
        work = fs.mountpoint / "work"
        copy_prefix(ref_work, work)
        fs.fill(leave_bytes=int(1.6 * last))
        with _stderr(tmp_path / "full.log"):
            assert relaunch(work, cohort, store) == 2
        message = (tmp_path / "full.log").read_text()
        assert "stage cv failed" in message and "is full or over quota" in message, message[-3000:]
        assert partial_files(work) == []
        fs.unfill()
        assert relaunch(work, cohort, store) == 0
        assert result_differences(work, ref_work) == []


def test_corrupt_shard_is_rebuilt_and_corrupt_checkpoint_is_named(reference, tmp_path, caplog):
    ref_work, cohort = reference
    work = tmp_path / "work"
    shutil.copytree(ref_work, work, ignore=shutil.ignore_patterns("launches", "mlflow.db", "mlartifacts",
                                                                   "tracking-spool"))
    flip_byte(work / "shards" / "shard-00001.h5")
    truncate_half(work / "checkpoints" / "fit" / "last.pt")
    with caplog.at_level(logging.INFO), _stderr(tmp_path / "first.log"):
        assert relaunch(work, cohort) == 2
    assert "shard-00001" in caplog.text and "corrupt" in caplog.text
    message = (tmp_path / "first.log").read_text()
    assert "stage fit failed" in message and "cannot be read (truncated or corrupt). Delete it" in message
    (work / "checkpoints" / "fit" / "last.pt").unlink()  # what the message says to do
    assert relaunch(work, cohort) == 0
    assert result_differences(work, ref_work) == []


@contextlib.contextmanager
def _stderr(path: Path):
    """The launcher's error messages (``print(..., file=sys.stderr)``) into ``path``."""
    with open(path, "w") as out, contextlib.redirect_stderr(out):
        yield
