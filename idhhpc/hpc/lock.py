"""One launch per work dir: a lock file held by a local launch, or by the Slurm chain it submitted.

Two launches on one work dir would both run every stage into the same files (and on Slurm
double the GPU use). A kernel lock (flock/fcntl) cannot do: a submitted chain has no process
while its jobs wait, its jobs run on other nodes, and POSIX locks vanish when any descriptor of
the file is closed. So the lock is a small JSON file, ``<work_dir>/.idhhpc.lock``, that says who
holds it:

- taken with ``link()`` from a fully written temporary file, atomic also on NFS, so a reader
  never sees a half-written lock (``O_EXCL`` followed by ``write`` would show an empty one);
- a local launch holds it while it runs, and touches it every ``heartbeat_s`` so that a launch
  on another host can tell a live holder from one whose host died;
- a Slurm launch hands it over to its chain, whose last job (``afterany`` every step) releases
  it; the launcher may exit at once;
- a stale lock (its process and jobs gone, its host rebooted, its chain ended, no heartbeat) is
  taken over with a message; one whose holder cannot be checked is left alone.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import getpass
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

from idhhpc.hpc.localjobs import group_alive
from idhhpc.hpc.sacct import FINAL_STATES, sacct_rows
from idhhpc.hpc.squeue import SlurmUnreachable, cluster_name, queued
from idhhpc.workdir import WorkDir

log = logging.getLogger(__name__)

HEARTBEAT_S = 30.0
ORPHAN_WAIT_S = 20.0
"""How long a new launch waits for the jobs of a launcher that died to end (they get SIGTERM
from the kernel when their launcher dies, and a training job saves ``last.pt`` first)."""


@dataclass
class LockInfo:
    """What the lock file holds: who, where, since when, and what to check to know it is alive."""

    token: str
    host: str
    boot_id: str
    pid: int
    pid_start: int | None
    user: str
    command: str
    since: str
    kind: str = "local"
    heartbeat_s: float = HEARTBEAT_S
    jobs: dict[str, str] = field(default_factory=dict)
    cluster: str | None = None
    slurm_job_ids: list[str] = field(default_factory=list)
    tracking_uri: str | None = None
    run_id: str | None = None

    def describe(self) -> str:
        if self.kind == "slurm":
            return (f"Slurm chain {','.join(self.slurm_job_ids)} on cluster {self.cluster} "
                    f"(submitted by {self.user} on {self.host}, since {self.since})")
        return f"a launch by {self.user} on {self.host} (pid {self.pid}, since {self.since})"


class LockBusy(RuntimeError):
    """Another launch holds the work dir; the message says who and what to do about it."""

    def __init__(self, path: Path, holder: LockInfo | None, why: str) -> None:
        self.path, self.holder, self.why = path, holder, why
        super().__init__(f"{path.parent} is in use by {holder.describe() if holder else 'an unknown holder'}: "
                         f"{why}.\n{_how_to_proceed(path, holder)}")


def _how_to_proceed(path: Path, holder: LockInfo | None) -> str:
    if holder is not None and holder.kind == "slurm":
        ids = ",".join(holder.slurm_job_ids)
        return (f"  Follow it with `squeue -j {ids}`, cancel it with `python -m idhhpc.launch --cancel` and the same "
                "--job/--set options, or use another work_dir.")
    if holder is not None:
        return (f"  Wait for it, stop it (Ctrl-C in its terminal, or `kill -TERM {holder.pid}` on {holder.host}), "
                f"or use another work_dir. If no launch uses this work dir any more, delete {path}.")
    return f"  If no launch uses this work dir any more, delete {path}."


def boot_id() -> str:
    with contextlib.suppress(OSError):
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    return ""


def pid_start_ticks(pid: int) -> int | None:
    """When ``pid`` started (clock ticks after boot), None when there is no such live process.
    Comparing it with the recorded value tells a live holder from a reused pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    return None if fields[0] in ("Z", "X") else int(fields[19])


class WorkDirLock:
    """The lock of one work dir; ``acquire`` raises :class:`LockBusy` when someone else holds it."""

    def __init__(self, root: str | os.PathLike, heartbeat_s: float = HEARTBEAT_S,
                 orphan_wait_s: float = ORPHAN_WAIT_S) -> None:
        self.dir = Path(root)
        self.path = WorkDir(self.dir).lock
        self.heartbeat_s, self.orphan_wait_s = heartbeat_s, orphan_wait_s
        self.info: LockInfo | None = None
        self._stop_beat = threading.Event()
        self._beat: threading.Thread | None = None

    # --- reading and writing -----------------------------------------------------------------
    def read(self, path: Path | None = None) -> LockInfo | None:
        path = path or self.path
        try:
            return LockInfo(**json.loads(path.read_text()))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError) as err:  # not written by this module
            raise LockBusy(self.path, None, f"{path} is not a lock idhhpc wrote ({err})") from None

    def _write_temp(self, info: LockInfo) -> Path:
        tmp = self.dir / f"{self.path.name}.{uuid.uuid4().hex}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, (json.dumps(asdict(info), indent=1) + "\n").encode())
            os.fsync(fd)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        finally:
            os.close(fd)
        return tmp

    def _try_link(self, info: LockInfo) -> bool:
        tmp = self._write_temp(info)
        try:
            os.link(tmp, self.path)
            return True
        except FileExistsError:
            return False
        except OSError:  # NFS may lose the reply to a link that worked: the link count tells
            return os.stat(tmp).st_nlink == 2
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def _new_info(self, command: str) -> LockInfo:
        return LockInfo(token=uuid.uuid4().hex, host=socket.gethostname(), boot_id=boot_id(), pid=os.getpid(),
                        pid_start=pid_start_ticks(os.getpid()), user=getpass.getuser(), command=command[:400],
                        since=dt.datetime.now().astimezone().isoformat(timespec="seconds"),
                        heartbeat_s=self.heartbeat_s)

    # --- acquire, update, release ------------------------------------------------------------
    def acquire(self, command: str | None = None, heartbeat: bool = True) -> LockInfo:
        """Take the lock, taking over a stale one (with a warning); raise LockBusy otherwise."""
        self.dir.mkdir(parents=True, exist_ok=True)
        mine = self._new_info(command or " ".join(sys.argv))
        for _ in range(5):
            if self._try_link(mine):
                self.info = mine
                if heartbeat:
                    self._start_heartbeat()
                return mine
            current = self.read()
            if current is None:
                continue  # released between our link and our read
            stale, why = self.staleness(current)
            if not stale:
                raise LockBusy(self.path, current, why)
            self._take_over(current, mine.token, why)
        raise LockBusy(self.path, self.read(), "other launches kept taking the lock first")

    def _take_over(self, stale: LockInfo, my_token: str, why: str) -> None:
        """Move the stale lock aside and delete it only if it is still the one judged stale."""
        moved = self.dir / f"{self.path.name}.stale.{my_token}"
        try:
            os.rename(self.path, moved)
        except FileNotFoundError:
            return
        got = self.read(moved)
        if got is not None and got.token == stale.token:
            log.warning("took over the lock of %s: %s (%s)", stale.describe(), why, self.path)
            os.unlink(moved)
            return
        with contextlib.suppress(FileExistsError):  # a fresh lock replaced the stale one: put it back
            os.link(moved, self.path)
        os.unlink(moved)
        raise LockBusy(self.path, got, "another launch took the stale lock over first")

    def update(self, **changes: object) -> None:
        """Rewrite our own lock (its jobs, the Slurm chain, the MLflow run), atomically."""
        if self.info is None:
            raise RuntimeError("update() before acquire()")
        current = self.read()
        if current is None or current.token != self.info.token:
            raise LockBusy(self.path, current, "our lock was taken over")
        for key, value in changes.items():
            setattr(self.info, key, value)
        os.replace(self._write_temp(self.info), self.path)

    def add_job(self, pgid: int | str, step: str) -> None:
        """Record a local job's process group: the lock stays live while it runs. Advisory: a
        failed write (a full disk) costs a warning, not the launch."""
        assert self.info is not None
        try:
            self.update(jobs={**self.info.jobs, str(pgid): step})
        except OSError as err:
            log.warning("could not record job %s in %s: %s", pgid, self.path, err)

    def hand_over_to_slurm(self, job_ids: list[str]) -> None:
        """The submitted chain holds the lock from now on; its last job releases it."""
        self._stop_heartbeat()
        self.update(kind="slurm", slurm_job_ids=list(job_ids), cluster=cluster_name(), jobs={})

    def release(self, token: str | None = None) -> bool:
        """Remove the lock if it is ours (``token``, by default the one we took); True if removed."""
        self._stop_heartbeat()
        token = token or (self.info.token if self.info else None)
        moved = self.dir / f"{self.path.name}.release.{uuid.uuid4().hex}"
        try:
            os.rename(self.path, moved)
        except FileNotFoundError:
            return False
        got = self.read(moved)
        if got is None or got.token != token:  # not ours (taken over): put it back
            with contextlib.suppress(FileExistsError):
                os.link(moved, self.path)
            os.unlink(moved)
            return False
        os.unlink(moved)
        self.info = None
        return True

    # --- is the holder alive? ------------------------------------------------------------------
    def staleness(self, info: LockInfo) -> tuple[bool, str]:
        """(stale, why): stale only when the holder is provably gone; doubt counts as alive."""
        if info.kind == "slurm":
            return _chain_ended(info)
        if info.host == socket.gethostname() and info.boot_id == boot_id():
            return self._local_holder_gone(info)
        if info.host == socket.gethostname():
            return True, f"{info.host} rebooted since the lock was taken"
        age = self._age_on_server_s()
        limit = max(120.0, 4 * info.heartbeat_s)
        if age > limit:
            return True, f"{info.host} has not touched the lock for {age:.0f} s (limit {limit:.0f} s)"
        return False, f"{info.host} touched the lock {age:.0f} s ago"

    def _local_holder_gone(self, info: LockInfo) -> tuple[bool, str]:
        start = pid_start_ticks(info.pid)
        if start is not None and (info.pid_start is None or start == info.pid_start):
            return False, f"pid {info.pid} is running"
        deadline = time.monotonic() + self.orphan_wait_s
        alive = [int(g) for g in info.jobs if group_alive(int(g))]
        if alive:
            log.warning("launcher pid %d is gone; waiting up to %.0f s for its jobs (process groups %s) to end",
                        info.pid, self.orphan_wait_s, ", ".join(map(str, alive)))
        while alive and time.monotonic() < deadline:
            time.sleep(0.2)
            alive = [g for g in alive if group_alive(g)]
        if alive:
            jobs = ", ".join(f"{g} ({info.jobs[str(g)]})" for g in alive)
            return False, f"launcher pid {info.pid} is gone but its jobs still run: process groups {jobs}"
        gone = "is now another process" if start is not None else "is gone"
        return True, f"pid {info.pid} {gone} and none of its jobs runs"

    def _age_on_server_s(self) -> float:
        """Seconds since the lock was touched, on the file server's clock (NFS sets mtimes there)."""
        probe = self.dir / f"{self.path.name}.probe.{uuid.uuid4().hex}"
        probe.touch()
        try:
            now = probe.stat().st_mtime
        finally:
            probe.unlink()
        return now - self.path.stat().st_mtime

    # --- heartbeat of a local launch ------------------------------------------------------------
    def _start_heartbeat(self) -> None:
        self._stop_beat.clear()
        self._beat = threading.Thread(target=self._heartbeat, name="idhhpc-lock-heartbeat", daemon=True)
        self._beat.start()

    def _heartbeat(self) -> None:
        while not self._stop_beat.wait(self.heartbeat_s):
            try:
                current = self.read()
                if current is None or self.info is None or current.token != self.info.token:
                    log.error("the lock %s was removed or taken over while this launch runs", self.path)
                    return
                os.utime(self.path)
            except Exception as err:  # noqa: BLE001 - a transient NFS error must not end the launch
                log.warning("could not touch %s: %s", self.path, err)

    def _stop_heartbeat(self) -> None:
        self._stop_beat.set()
        if self._beat is not None and self._beat is not threading.current_thread():
            self._beat.join(timeout=5)
        self._beat = None


def _chain_ended(info: LockInfo) -> tuple[bool, str]:
    """A chain is over when slurmctld no longer lists any of its jobs and sacct has them all final."""
    here = cluster_name()
    if here is None or (info.cluster and here != info.cluster):
        return False, f"its cluster {info.cluster!r} cannot be asked from here (this is {here!r})"
    try:
        live = queued(info.slurm_job_ids)
    except SlurmUnreachable as err:
        return False, f"Slurm cannot be asked ({err})"
    if live:
        job_id, (state, _) = min(live.items(), key=lambda item: (item[1][0] != "RUNNING", item[0]))
        return False, f"job {job_id} is {state}" + (f" ({len(live) - 1} more queued)" if len(live) > 1 else "")
    try:
        rows = sacct_rows(info.slurm_job_ids, ("JobID", "State"))
    except (RuntimeError, OSError) as err:
        return False, f"sacct cannot be asked ({err})"
    open_jobs = [f"{r['JobID']}={r['State']}" for r in rows if r["State"] not in FINAL_STATES]
    if open_jobs or not rows:
        return False, f"jobs not finished in sacct: {', '.join(open_jobs) or 'none recorded yet'}"
    return True, "every job of the chain has ended (" + ", ".join(f"{r['JobID']}={r['State']}" for r in rows[:6]) + ")"


def release_lock(work_dir: str | os.PathLike, token: str) -> bool:
    """Release the lock of ``work_dir`` if ``token`` still holds it (the chain's last job does this)."""
    released = WorkDirLock(work_dir).release(token)
    log.info("work-dir lock %s: %s", WorkDir(Path(work_dir)).lock,
             "released" if released else "not ours any more (taken over or already released)")
    return released


def stop_local_holder(info: LockInfo, timeout_s: float = 60.0) -> bool:
    """SIGTERM a local launch on this host (it stops its jobs and releases the lock); True once gone."""
    if info.host != socket.gethostname() or pid_start_ticks(info.pid) != info.pid_start:
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(info.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while pid_start_ticks(info.pid) == info.pid_start and time.monotonic() < deadline:
        time.sleep(0.2)
    return pid_start_ticks(info.pid) != info.pid_start

