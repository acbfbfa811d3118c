"""submitit executors built from a stage's resources: the only place that knows about clusters."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Literal

import submitit

from idhhpc.config import CONTROL_CHARACTERS, ConfigError, Resources
from idhhpc.hpc.localjobs import make_local

ExecutorKind = Literal["debug", "local", "slurm"]


class SlurmNotAvailable(RuntimeError):
    """No ``sbatch`` here: tell the user how to run on this machine instead."""


def require_sbatch() -> None:
    """Fail before anything is created when Slurm's client is missing, with the way out."""
    if shutil.which("sbatch") is None:
        raise SlurmNotAvailable("sbatch is not on PATH: this machine is not a Slurm login node. "
                                "Run with --executor local (subprocesses) or --executor debug (in-process).")


def make_executor(kind: ExecutorKind, folder: Path, resources: Resources, job_name: str,
                  dependency: str | None = None) -> submitit.Executor:
    """An executor for one step; local jobs are stoppable and capped at ``cpus_per_task`` threads."""
    if kind == "slurm":
        require_sbatch()
        check_script_path(folder)
    executor = submitit.AutoExecutor(folder=folder / "%j", cluster=kind, slurm_max_num_timeout=resources.max_timeouts)
    executor.update_parameters(name=job_name, timeout_min=resources.time_min, **_slurm_parameters(resources, dependency))
    if kind == "local":
        make_local(executor, resources.cpus_per_task)
    return executor


def check_script_path(folder: Path) -> None:
    """The job folder goes into ``#SBATCH --output`` and the srun line: a newline there would
    start a shell line of its own, so a work dir with control characters is refused."""
    if CONTROL_CHARACTERS.search(str(folder)):
        raise ConfigError(f"work_dir {str(folder)!r}: newlines and other control characters cannot go into an "
                          "sbatch script; choose another work_dir")


def _slurm_parameters(resources: Resources, dependency: str | None) -> dict:
    """submitit's ``slurm_*`` names; the local and debug executors ignore them."""
    extra = dict(resources.extra_sbatch)
    if dependency:
        extra.update(dependency=dependency, kill_on_invalid_dep="yes")
    params = {
        "slurm_partition": resources.partition,
        "slurm_account": resources.account,
        "slurm_qos": resources.qos,
        "slurm_constraint": resources.constraint,
        "slurm_setup": list(resources.setup),
        "slurm_additional_parameters": extra,
        "slurm_array_parallelism": resources.array_parallelism,
        "nodes": resources.nodes,
        "tasks_per_node": resources.tasks_per_node,
        "cpus_per_task": resources.cpus_per_task,
        "gpus_per_node": resources.gpus_per_node,
        "mem_gb": resources.mem_gb,
    }
    return {key: value for key, value in params.items() if value not in (None, [], {})}


def sbatch_preview(folder: Path, resources: Resources, job_name: str, dependency: str | None = None,
                   array_size: int | None = None) -> str:
    """The sbatch script submitit would write, for ``--dry-run`` (nothing is submitted)."""
    from submitit.slurm.slurm import _make_sbatch_string

    check_script_path(folder)
    extra = dict(resources.extra_sbatch)
    if dependency:
        extra.update(dependency=dependency, kill_on_invalid_dep="yes")
    return _make_sbatch_string(
        command="python -u -m submitit.core._submit <job folder>",
        folder=str(folder / "%j"),
        job_name=job_name,
        partition=resources.partition,
        time=resources.time_min,
        nodes=resources.nodes,
        ntasks_per_node=resources.tasks_per_node,
        cpus_per_task=resources.cpus_per_task,
        gpus_per_node=resources.gpus_per_node or None,
        mem=f"{resources.mem_gb:g}GB",
        qos=resources.qos,
        account=resources.account,
        constraint=resources.constraint,
        setup=list(resources.setup),
        map_count=array_size if array_size and array_size > 1 else None,
        array_parallelism=resources.array_parallelism,
        additional_parameters=extra,
    )
