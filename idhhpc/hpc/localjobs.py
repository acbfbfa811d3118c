"""Local submitit jobs that a launcher can stop, and that stop with their launcher.

submitit's local executor starts each job's controller (``python -m submitit.local._local``)
in the launcher's own process group, so a terminal's Ctrl-C reaches every task and DataLoader
worker at once, and a launcher that dies leaves its jobs running as orphans. Here each
controller starts in its own session (the job's process group is the controller's pid, so the
whole job can be killed without touching the launcher), asks the kernel for SIGTERM when its
launcher dies (``PR_SET_PDEATHSIG``: a training task then saves ``last.pt`` and ends), caps the
math libraries' threads at the job's ``cpus_per_task``, and writes to a task's stderr when the
task was killed by a signal, so the failure message can say so.

Run as ``python -m idhhpc.hpc.localjobs FOLDER`` it is the controller.
"""

from __future__ import annotations

import ctypes
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Sequence

import submitit
from submitit.local import local as submitit_local

PR_SET_PDEATHSIG = 1
LAUNCHER_PID_ENV = "IDHHPC_LAUNCHER_PID"
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
_SIGNAL_HINTS = {
    signal.SIGKILL: "killed by hand, by the launcher after its grace period, or by the kernel's out-of-memory killer",
    signal.SIGSEGV: "a crash in native code (HDF5 does this on a full disk)",
    signal.SIGBUS: "a crash in native code (a memory-mapped file shrank or the disk is full)",
}


class StoppableLocalExecutor(submitit.LocalExecutor):
    """submitit's LocalExecutor whose jobs run in their own session (see the module docstring)."""

    threads: int = 1

    def _submit_command(self, command: str) -> submitit_local.LocalJob:
        tasks = self.parameters.get("tasks_per_node", 1)
        gpus = self.parameters.get("gpus_per_node", 0)
        visible = self.parameters.get("visible_gpus", ())
        devices = range(gpus) if visible == () else visible[:gpus]
        process = start_controller(
            folder=self.folder, command=command, tasks_per_node=tasks, cuda_devices=",".join(map(str, devices)),
            timeout_min=self.parameters.get("timeout_min", 2.0), signal_delay_s=self.parameters.get("signal_delay_s", 30),
            stderr_to_stdout=self.parameters.get("stderr_to_stdout", False), setup=self.parameters.get("setup", ()),
            threads=self.threads)
        return submitit_local.LocalJob(folder=self.folder, job_id=str(process.pid), process=process,
                                       tasks=list(range(tasks)))


def make_local(executor: submitit.AutoExecutor, threads: int) -> submitit.AutoExecutor:
    """Turn an ``AutoExecutor(cluster="local")`` into one that starts stoppable jobs."""
    executor._executor.__class__ = StoppableLocalExecutor
    executor._executor.threads = threads
    return executor


def start_controller(folder: Path, command: str, tasks_per_node: int, cuda_devices: str, timeout_min: float,
                     signal_delay_s: int, stderr_to_stdout: bool, setup: Sequence[str],
                     threads: int) -> subprocess.Popen:
    """submitit's ``start_controller`` (1.5) with its own session, thread caps and this controller."""
    env = dict(os.environ)
    env.update({name: str(threads) for name in THREAD_VARIABLES})
    env.update(
        SUBMITIT_LOCAL_NTASKS=str(tasks_per_node), SUBMITIT_LOCAL_COMMAND=command,
        SUBMITIT_LOCAL_TIMEOUT_S=str(int(60 * timeout_min)), SUBMITIT_LOCAL_SIGNAL_DELAY_S=str(int(signal_delay_s)),
        SUBMITIT_LOCAL_NODEID="0", SUBMITIT_LOCAL_JOB_NUM_NODES="1",
        SUBMITIT_STDERR_TO_STDOUT="1" if stderr_to_stdout else "", SUBMITIT_EXECUTOR="local",
        CUDA_VISIBLE_DEVICES=cuda_devices, SUBMITIT_LOCAL_WITH_SHELL="",
    )
    env[LAUNCHER_PID_ENV] = str(os.getpid())
    cmd: Any = [sys.executable, "-m", __name__, str(folder)]
    if setup:  # exec: the controller replaces the shell, so its parent is still the launcher
        cmd = " && ".join([*setup, "exec " + shlex.join(cmd)])
    return subprocess.Popen(cmd, shell=bool(setup), env=env, start_new_session=True)


class Controller(submitit_local.Controller):
    """submitit's job controller, ended with its launcher and telling how its tasks died."""

    def run(self, max_retry: int = 6) -> None:
        _die_with_launcher()
        super().run(max_retry)

    def wait(self, freq: int = 24) -> Sequence[int | None]:
        codes = super().wait(freq)
        for task, code in enumerate(codes):
            if code is not None and code < 0:
                sig = signal.Signals(-code)
                hint = _SIGNAL_HINTS.get(sig, "a signal from outside the job")
                try:
                    print(f"idhhpc: task {task} of job {self.pid} was ended by {sig.name} (signal {-code}): {hint}",
                          file=self.stderrs[task], flush=True)
                except OSError:  # the log's file system may be the full one
                    pass
        return codes


def group_alive(pgid: int) -> bool:
    """True while a process of group ``pgid`` runs. Zombies do not count: an orphan's zombie is
    reaped by init, which in some containers never happens, and it holds no resources."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if not sys.platform.startswith("linux"):
        return True
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            return True
    return False


def _die_with_launcher() -> None:
    """SIGTERM this controller when the launcher that started it dies, even by SIGKILL."""
    launcher = int(os.environ.get(LAUNCHER_PID_ENV, "0"))
    if not sys.platform.startswith("linux") or not launcher:
        return
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    if os.getppid() != launcher:  # it died before prctl took effect
        sys.exit(128 + int(signal.SIGTERM))


if __name__ == "__main__":
    Controller(Path(sys.argv[1])).run()
