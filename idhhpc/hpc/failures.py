"""Turn a failed job into a message that says what failed, where, and what to change.

Used for every executor: in-process jobs raise the original exception, local and Slurm jobs
raise submitit's ``FailedJobError`` holding the remote traceback as text, so both the exception
chain and the text are searched.
"""

from __future__ import annotations

import re
import shutil
import signal
from pathlib import Path

from idhhpc.config import JobConfig

_OOM_MARKERS = ("OutOfMemoryError", "CUDA out of memory")
_SIGNAL_LINE = re.compile(r"idhhpc: task \d+ of job \S+ was ended by SIG")
_SRUN_TASK_LINE = re.compile(r"^srun: error: (\S+): (tasks? [\d,\-]+): (.+?)\s*$", re.MULTILINE)
"""srun's line for tasks that did not exit by themselves: ``srun: error: node: task 0: Killed``,
the signal given as ``strsignal`` words (``Exited with exit code N`` is no signal)."""
_SIGNAL_WORDS = {signal.strsignal(sig): sig for sig in signal.Signals if signal.strsignal(sig)}
_SRUN_SIGNAL_HINTS = {
    signal.SIGKILL: "killed by hand on the node or by the kernel's out-of-memory killer (Slurm's own kills end a "
                    "job CANCELLED, TIMEOUT or OUT_OF_MEMORY instead)",
    signal.SIGSEGV: "a crash in native code (HDF5 does this on a full disk)",
    signal.SIGBUS: "a crash in native code (a memory-mapped file shrank or the disk is full)",
}
_DISK_FULL_MARKERS = ("No space left on device", "Errno 28", "errno = 28", "Disk quota exceeded", "Errno 122",
                      "unexpected pos", "file write failed")
"""How a full file system shows: OSError, HDF5's error stack, and torch.save's writer (which
raises a bare RuntimeError "unexpected pos ..." without an errno)."""
_UNREADABLE_CHECKPOINT = re.compile(r"cannot read checkpoint (\S+\.pt)")
_EXCEPTION_LINE = re.compile(r"^(?:[A-Za-z_][\w.]*\.)?[A-Z]\w*(?:Error|Exception|Interrupted|Exit)\b.*")


def is_gpu_out_of_memory(err: BaseException | None, text: str = "") -> bool:
    """True for ``torch.cuda.OutOfMemoryError`` raised here or (as text) in a remote job."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if type(err).__name__ == "OutOfMemoryError":
            return True
        text += "\n" + str(err)
        err = err.__cause__ or err.__context__
    return any(marker in text for marker in _OOM_MARKERS)


def out_of_memory_hint(config: JobConfig) -> str:
    t, m = config.train, config.model
    return ("GPU out of memory. Lower the memory per step and keep the effective batch "
            f"(micro_batch x accumulate = {t.micro_batch * t.accumulate}): "
            f"--set train.micro_batch={max(1, t.micro_batch // 2)} --set train.accumulate={t.accumulate * 2} "
            f"(now {t.micro_batch} and {t.accumulate}), and/or --set model.activation_checkpointing=true "
            f"(now {str(m.activation_checkpointing).lower()}); fewer model.trainable_stages also saves memory.")


def error_lines(err: BaseException, lines: int = 25) -> str:
    """The exception as the job raised it (with notes); submitit wraps remote ones with their traceback."""
    text = [line for line in str(err).strip().splitlines() if line.strip()] or [type(err).__name__]
    text += list(getattr(err, "__notes__", []))
    return "\n".join(text[-lines:])


def stderr_tail(path: str | Path | None, lines: int = 15) -> str:
    """The end of a job's stderr, where Python tracebacks and Slurm errors land."""
    try:
        text = Path(path).read_text(errors="replace") if path else ""
    except OSError:
        return ""
    tail = text.strip().splitlines()[-lines:]
    return f"--- tail of {path}\n" + "\n".join(tail) if tail else ""


def last_exception_line(text: str) -> str | None:
    """The final ``SomeError: message`` line of a traceback: what went wrong, before the details."""
    found = [line.strip() for line in text.splitlines() if _EXCEPTION_LINE.match(line.strip())]
    return found[-1] if found else None


def killed_by_signal(text: str) -> str | None:
    """The local controller's line saying a task was ended by a signal (``idhhpc.hpc.localjobs``)."""
    found = [line.strip() for line in text.splitlines() if _SIGNAL_LINE.search(line)]
    return found[-1] if found else None


def srun_signal(text: str, job_id: str) -> str | None:
    """srun's report that a Slurm job's task was ended by a signal, as the local controller's
    line says it (``task 0 of job 41 on node n1 was ended by SIGKILL (signal 9): ...``)."""
    for node, tasks, words in reversed(_SRUN_TASK_LINE.findall(text)):
        sig = _SIGNAL_WORDS.get(words)
        if sig is not None:
            hint = _SRUN_SIGNAL_HINTS.get(sig, "a signal from outside the job")
            verb = "were" if tasks.startswith("tasks") else "was"
            return f"{tasks} of job {job_id} on {node} {verb} ended by {sig.name} (signal {int(sig)}): {hint}"
    return None


def disk_full_hint(config: JobConfig, text: str) -> str | None:
    """When a write failed for lack of space (or the work dir's file system is nearly full now),
    say so with the free space: h5py and torch.save report it in words that do not say "disk"."""
    work_dir = Path(config.work_dir)
    try:
        usage = shutil.disk_usage(work_dir if work_dir.exists() else work_dir.parent)
    except OSError:
        usage = None
    nearly_full = usage is not None and usage.free < max(64 << 20, usage.total // 100)
    if not (any(marker in text for marker in _DISK_FULL_MARKERS) or nearly_full):
        return None
    free = f"{_size(usage.free)} free of {_size(usage.total)}" if usage else "free space unknown"
    return (f"cause: the file system of {work_dir} is full or over quota ({free}). Free space there (or move "
            "work_dir) and relaunch: finished outputs are kept, and a partly written file is never used.")


def unreadable_checkpoint_hint(text: str) -> str | None:
    """A training run whose ``last.pt`` cannot be read (truncated, corrupt): name it and the way out."""
    found = _UNREADABLE_CHECKPOINT.search(text)
    if found is None:
        return None
    path = found.group(1)
    return (f"cause: checkpoint {path} cannot be read (truncated or corrupt). Delete it and relaunch: that training "
            "run starts again from its first epoch, everything else is kept.")


def _size(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def describe_failure(step: str, job_id: str, err: BaseException | None, config: JobConfig,
                     stderr_path: str | Path | None, state: str = "FAILED") -> str:
    """Stage, job, error (with the patient for preprocessing), stderr tail and what to change:
    for OOM the memory settings, for a full disk the free space, for a killed task the signal."""
    tail = stderr_tail(stderr_path)
    parts = [f"stage {step} failed (job {job_id}, {state})"]
    error_text = error_lines(err, lines=10_000) if err is not None else ""
    headline = last_exception_line("\n".join([error_text, tail]))
    if headline:
        parts.append(f"error: {headline}")
    signal_line = killed_by_signal(tail)
    signal_line = signal_line.removeprefix("idhhpc: ") if signal_line else srun_signal(tail, job_id)
    if signal_line:
        parts.append(f"cause: {signal_line}")
    for hint in (disk_full_hint(config, "\n".join([error_text, tail])),
                 unreadable_checkpoint_hint("\n".join([error_text, tail]))):
        if hint:
            parts.append(hint)
    if err is not None:
        parts.append(error_lines(err))
    if tail:
        parts.append(tail)
    if is_gpu_out_of_memory(err, tail):
        parts.append(out_of_memory_hint(config))
    return "\n".join(parts)
