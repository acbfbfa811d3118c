"""One launch per work dir: the lock file, its holders, stale locks, and the launcher's refusal."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from idhhpc.hpc.lock import LockBusy, WorkDirLock, release_lock
from idhhpc.launch import LOCK_BUSY
from tests.support.faults import launch_argv, launcher_env

REPO = Path(__file__).resolve().parents[2]
HOLD = ("import sys, time; from idhhpc.hpc.lock import WorkDirLock; WorkDirLock(sys.argv[1]).acquire(); "
        "print('held', flush=True); time.sleep(float(sys.argv[2]))")


def hold_lock(work: Path, seconds: float = 120) -> subprocess.Popen:
    """A real process that holds the lock of ``work`` (a stand-in for a running launch)."""
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(work), str(seconds)], stdout=subprocess.PIPE, text=True,
                              env=launcher_env())
    assert holder.stdout.readline().strip() == "held"
    return holder


def rewrite(work: Path, **changes) -> None:
    path = work / ".idhhpc.lock"
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def test_exactly_one_of_many_racing_processes_gets_the_lock(tmp_path):
    work, start = tmp_path / "work", tmp_path / "go"
    race = ("import sys, time; from pathlib import Path; from idhhpc.hpc.lock import WorkDirLock, LockBusy\n"
            "print('ready', flush=True)\n"
            "while not Path(sys.argv[2]).exists(): time.sleep(0.01)\n"
            "try:\n    WorkDirLock(sys.argv[1]).acquire(heartbeat=False); print('won', flush=True)\n"
            "except LockBusy: print('busy', flush=True)\n"
            "sys.stdin.read()")
    racers = [subprocess.Popen([sys.executable, "-c", race, str(work), str(start)], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True, env=launcher_env()) for _ in range(6)]
    assert [racer.stdout.readline().strip() for racer in racers] == ["ready"] * 6
    start.touch()
    outcomes = sorted(racer.stdout.readline().strip() for racer in racers)  # all answer while the winner holds
    for racer in racers:
        racer.communicate(timeout=60)
    assert outcomes == ["busy"] * 5 + ["won"]
    assert not list(work.glob(".idhhpc.lock.*"))  # no temporary file left


def test_a_live_holder_is_named_and_a_dead_one_taken_over(tmp_path, caplog):
    work = tmp_path / "work"
    holder = hold_lock(work)
    try:
        with pytest.raises(LockBusy) as busy:
            WorkDirLock(work).acquire(heartbeat=False)
        message = str(busy.value)
        assert f"pid {holder.pid}" in message and socket.gethostname() in message and "since" in message
        assert f"kill -TERM {holder.pid}" in message
    finally:
        holder.kill()
        holder.wait()
    lock = WorkDirLock(work)
    with caplog.at_level(logging.WARNING):
        taken = lock.acquire(heartbeat=False)
    assert taken.pid == os.getpid()
    assert f"pid {holder.pid} is gone" in caplog.text and "took over the lock" in caplog.text
    assert lock.release() and not (work / ".idhhpc.lock").exists()


def test_a_reused_pid_or_a_rebooted_host_makes_the_lock_stale(tmp_path):
    work = tmp_path / "work"
    first = WorkDirLock(work)
    first.acquire(heartbeat=False)
    rewrite(work, pid_start=1)  # our pid, but a process that started at another time
    assert WorkDirLock(work).staleness(first.read()) == (
        True, f"pid {os.getpid()} is now another process and none of its jobs runs")
    rewrite(work, boot_id="another-boot")
    stale, why = WorkDirLock(work).staleness(first.read())
    assert stale and "rebooted" in why


def test_a_lock_from_another_host_is_stale_only_without_heartbeat(tmp_path):
    work = tmp_path / "work"
    lock = WorkDirLock(work)
    lock.acquire(heartbeat=False)
    rewrite(work, host="node-elsewhere")
    stale, why = lock.staleness(lock.read())
    assert not stale and "touched the lock" in why
    hour_ago = time.time() - 3600
    os.utime(work / ".idhhpc.lock", (hour_ago, hour_ago))
    stale, why = lock.staleness(lock.read())
    assert stale and "has not touched the lock" in why


def test_only_the_holders_token_releases(tmp_path):
    work = tmp_path / "work"
    lock = WorkDirLock(work)
    info = lock.acquire(heartbeat=False)
    assert not release_lock(work, "not-the-token") and (work / ".idhhpc.lock").exists()
    assert release_lock(work, info.token) and not (work / ".idhhpc.lock").exists()


def test_the_launcher_refuses_a_busy_work_dir_at_once_and_says_how_to_proceed(tmp_path):
    work = tmp_path / "work"
    holder = hold_lock(work)
    try:
        refused = subprocess.run([sys.executable, "-m", "idhhpc.launch", *launch_argv(work, tmp_path / "cohort")],
                                 capture_output=True, text=True, timeout=120, env=launcher_env(), cwd=REPO)
    finally:
        holder.kill()
        holder.wait()
    assert refused.returncode == LOCK_BUSY, refused.stderr
    assert "is in use by a launch by" in refused.stderr and f"(pid {holder.pid}, since" in refused.stderr
    assert "use another work_dir" in refused.stderr
    assert not (work / "launches").exists() and not (work / "config.yaml").exists()  # nothing was started
