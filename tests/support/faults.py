"""Fault injection for the fault campaign (tests/hpc/test_faults.py and scripts/fault_campaign.py).

Everything here acts on real processes and real files: launchers started as
``python -m idhhpc.launch`` in their own session, job logs read as a user would, signals sent
to the processes the work-dir lock names, a small tmpfs filled to the last bytes, bytes
flipped in a shard. The tiny job of ``tests/support/jobs.py`` runs with 4 epochs (so a signal
can land mid-training) and the same thread count everywhere, so that an interrupted and resumed
run can be compared bit for bit with an undisturbed one.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import torch

from idhhpc.hpc.localjobs import group_alive
from idhhpc.hpc.lock import WorkDirLock
from tests.support.jobs import tiny_overrides

REPO = Path(__file__).resolve().parents[2]
THREADS = 2
"""Torch threads of every run compared (in-process, local jobs and Slurm jobs alike): float sums
depend on the thread count, so runs with different counts differ in the last bits."""
FAULT_OVERRIDES = ["train.epochs=4", f"hpc.resources.cpus_per_task={THREADS}",
                   # The default job gives cv and preprocess a core each; pin them too.
                   f"hpc.stages.cv.cpus_per_task={THREADS}", f"hpc.stages.preprocess.cpus_per_task={THREADS}"]
RUN_NAMES = ("fold-0", "fold-1", "fit")
PREFIX = ("cohort", "shards", "splits.json", "config.yaml")
"""What stages cohort, preprocess and split leave: a work dir where cv is the first step to run."""


def fault_overrides(work: Path, cohort: Path, *extra: str) -> list[str]:
    return tiny_overrides(work, cohort, *FAULT_OVERRIDES, *extra)


def launch_argv(work: Path, cohort: Path, *extra: str, executor: str = "debug") -> list[str]:
    """Arguments of ``python -m idhhpc.launch`` for the fault job in ``work``."""
    return ["--executor", executor, "-q", *[arg for o in fault_overrides(work, cohort, *extra) for arg in ("--set", o)]]


def launcher_env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": str(THREADS), "PYTHONPATH": f"{REPO}{os.pathsep}"
            f"{os.environ.get('PYTHONPATH', '')}".rstrip(os.pathsep), "PYTHONUNBUFFERED": "1"}


def start_launcher(argv: list[str], log: Path) -> subprocess.Popen:
    """``python -m idhhpc.launch ARGV`` in its own session (signals to it never reach pytest)."""
    out = open(log, "ab")
    try:
        return subprocess.Popen([sys.executable, "-m", "idhhpc.launch", *argv], stdout=out, stderr=subprocess.STDOUT,
                                env=launcher_env(), cwd=REPO, start_new_session=True)
    finally:
        out.close()


def job_logs(work: Path) -> list[Path]:
    return sorted((work / "launches").glob("*/*/*_log.out"))


def wait_for_job_line(work: Path, pattern: str, timeout_s: float = 300, process: subprocess.Popen | None = None,
                      skip: set[Path] = frozenset()) -> Path:
    """The first job log (not in ``skip``) with a line matching ``pattern``; fails if the launcher ends first."""
    regex, deadline = re.compile(pattern), time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for path in job_logs(work):
            if path not in skip and regex.search(path.read_text(errors="replace")):
                return path
        if process is not None and process.poll() is not None:
            raise AssertionError(f"launcher ended (status {process.returncode}) before a job logged {pattern!r}")
        time.sleep(0.2)
    raise TimeoutError(f"no job log in {work} matched {pattern!r} within {timeout_s} s")


def lock_groups(work: Path) -> dict[int, str]:
    """The local jobs' process groups the work-dir lock records (job pgid -> step)."""
    info = WorkDirLock(work).read()
    return {int(pgid): step for pgid, step in (info.jobs.items() if info else ())}


def task_pids(pgid: int) -> list[int]:
    """The task processes of a local job: children of its controller (pid == pgid)."""
    children = Path(f"/proc/{pgid}/task/{pgid}/children")
    return [int(pid) for pid in children.read_text().split()] if children.exists() else []


def wait_until_gone(pgids: list[int], timeout_s: float = 60) -> list[int]:
    """Wait for process groups to end; the ones still alive after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    alive = [g for g in pgids if group_alive(g)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = [g for g in alive if group_alive(g)]
    return alive


def launch_processes(launcher_pid: int) -> list[str]:
    """Live processes started by the launch whose launcher had ``launcher_pid`` (its local jobs put
    the pid in their environment, and everything they start inherits it: Ray's daemons and
    workers, DataLoader workers), as ``pid name``; needs the right to read their environment."""
    from idhhpc.hpc.localjobs import LAUNCHER_PID_ENV

    marker = f"{LAUNCHER_PID_ENV}={launcher_pid}".encode()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if marker in (proc / "environ").read_bytes().split(b"\0") and (proc / "stat").read_text().split()[2] != "Z":
                found.append(f"{proc.name} {(proc / 'comm').read_text().strip()}")
        except OSError:  # ended meanwhile, or not ours to read
            continue
    return found


def wait_until_no_launch_processes(launcher_pid: int, timeout_s: float = 60) -> list[str]:
    """Wait for every process of the launch to end; those still alive after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    left = launch_processes(launcher_pid)
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = launch_processes(launcher_pid)
    return left


def copy_prefix(source: Path, dest: Path) -> None:
    """The outputs of cohort, preprocess and split of ``source`` in ``dest`` (mtimes kept)."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in PREFIX:
        item = source / name
        if item.is_dir():
            shutil.copytree(item, dest / name)
        else:
            shutil.copy2(item, dest / name)


def result_differences(work: Path, reference: Path) -> list[str]:
    """What differs between two finished runs: test metrics, predictions, every exported model."""
    found = []
    for name in ("metrics.json", "predictions.csv"):
        if (work / "reports" / name).read_bytes() != (reference / "reports" / name).read_bytes():
            found.append(f"reports/{name}")
    for run in RUN_NAMES:
        a, b = (torch.load(w / "checkpoints" / run / "model.pt", weights_only=True)["model"] for w in (work, reference))
        if a.keys() != b.keys() or not all(torch.equal(a[k], b[k]) for k in a):
            found.append(f"checkpoints/{run}/model.pt weights")
    return found


def read_test_metrics(work: Path) -> dict:
    return json.loads((work / "reports" / "metrics.json").read_text())


def partial_files(work: Path) -> list[Path]:
    """Temporary files of interrupted atomic writes (``.name.XXXX.tmp``) anywhere in the work dir."""
    return sorted(p for p in work.rglob(".*.tmp") if p.is_file())


def shards_consistent(work: Path) -> list[str]:
    """Shards whose sidecar does not match them: such a shard must never be taken as valid."""
    from idhhpc.atomic import sha256_file

    bad = []
    for sidecar in sorted((work / "shards").glob("shard-*.json")):
        record = json.loads(sidecar.read_text())
        shard = work / "shards" / record["shard"]
        if not shard.is_file() or sha256_file(shard) != record["sha256"]:
            bad.append(sidecar.name)
    return bad


def flip_byte(path: Path, offset: int = -100) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def truncate_half(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


class Tmpfs:
    """A small tmpfs (needs root) standing in for a work dir's file system, filled on demand."""

    def __init__(self, mountpoint: Path, size_mb: int) -> None:
        self.mountpoint, self.size_mb = Path(mountpoint), size_mb
        self.filler = self.mountpoint / "filler.bin"

    def __enter__(self) -> "Tmpfs":
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={self.size_mb}m", "tmpfs", str(self.mountpoint)],
                       check=True, capture_output=True, text=True)
        return self

    def __exit__(self, *exc: object) -> None:
        subprocess.run(["umount", "-l", str(self.mountpoint)], check=False, capture_output=True)

    def free(self) -> int:
        return shutil.disk_usage(self.mountpoint).free

    def fill(self, leave_bytes: int) -> None:
        """Leave about ``leave_bytes`` free (tmpfs counts whole pages)."""
        size = max(0, self.free() - leave_bytes)
        with open(self.filler, "ab") as out:
            block = b"\0" * (1 << 20)
            while size > 0:
                out.write(block[: min(size, len(block))])
                size -= len(block)

    def unfill(self) -> None:
        self.filler.unlink(missing_ok=True)


def running_as_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


@contextlib.contextmanager
def torch_threads(n: int = THREADS) -> Iterator[None]:
    """Run in-process stages with the same thread count as the jobs they are compared with."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def signal_group(pgid: int, sig: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def report_threads(config: object) -> tuple[int, str]:
    """A job that says how many threads it was given (torch's, and OMP_NUM_THREADS)."""
    return torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS", "")
