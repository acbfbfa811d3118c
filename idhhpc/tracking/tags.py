"""Where a run's code came from: the source, git and user tags MLflow's UI shows.

``MlflowClient.create_run`` sets none of them (only the fluent ``mlflow.start_run`` guesses
them from ``sys.argv``, which in a submitit worker names submitit, not idhhpc), so every run
the project creates carries them explicitly: the runs table's *Source* column shows the entry
point's file, *Version* the short commit, the run page ``launch.py | main | 51ef084``.

The launcher computes the git state once and exports it (``IDHHPC_GIT_*``), so stage jobs on
nodes without git, or after the checkout moved on, still tag the commit the launch ran.
"""

from __future__ import annotations

import functools
import getpass
import os
import subprocess
from pathlib import Path

from mlflow.utils.mlflow_tags import (
    MLFLOW_GIT_BRANCH,
    MLFLOW_GIT_COMMIT,
    MLFLOW_GIT_REPO_URL,
    MLFLOW_SOURCE_NAME,
    MLFLOW_SOURCE_TYPE,
    MLFLOW_USER,
)

PACKAGE_DIR = Path(__file__).resolve().parents[1]
ENTRY_POINT_TAG = "idhhpc.entry_point"
DIRTY_TAG = "idhhpc.git.dirty"
ENTRY_POINTS = {
    "launch": "idhhpc.launch",
    "cv": "idhhpc.stages.cv",
    "cv-summary": "idhhpc.stages.cv",
    "fit": "idhhpc.stages.fit",
    "evaluate": "idhhpc.stages.evaluate",
    "explain": "idhhpc.stages.explain",
    "tune": "idhhpc.stages.tune",
    "trial": "idhhpc.tune.trainable",
}
"""The module whose code a run of each role records: what ``mlflow.source.name`` points at."""
_ENV = {"commit": "IDHHPC_GIT_COMMIT", "branch": "IDHHPC_GIT_BRANCH", "dirty": "IDHHPC_GIT_DIRTY",
        "repo": "IDHHPC_GIT_REPO"}


def source_tags(role: str) -> dict[str, str]:
    """``mlflow.source.*``, ``mlflow.source.git.*``, ``mlflow.user`` and the entry point of ``role``."""
    module = ENTRY_POINTS.get(role, "idhhpc")
    tags = {MLFLOW_SOURCE_NAME: str(module_file(module)), MLFLOW_SOURCE_TYPE: "JOB" if "SLURM_JOB_ID" in os.environ
            else "LOCAL", MLFLOW_USER: _user(), ENTRY_POINT_TAG: module}
    git = git_state()
    keys = {"commit": MLFLOW_GIT_COMMIT, "branch": MLFLOW_GIT_BRANCH, "repo": MLFLOW_GIT_REPO_URL, "dirty": DIRTY_TAG}
    tags.update({keys[name]: value for name, value in git.items() if value})
    return tags


def module_file(module: str) -> Path:
    """The source file of an idhhpc module, found from the package folder (nothing is imported)."""
    parts = module.split(".")[1:]
    path = PACKAGE_DIR.joinpath(*parts)
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def export_git_state() -> dict[str, str]:
    """Pin the git state in the environment, so every job the launch starts tags the same commit."""
    state = git_state()
    for name, value in state.items():
        if value:
            os.environ.setdefault(_ENV[name], value)
    return state


def git_state() -> dict[str, str]:
    """``commit``, ``branch``, ``repo`` (the checkout's path or remote) and ``dirty``; empty values
    when idhhpc does not run from a git checkout."""
    pinned = {name: os.environ.get(var, "") for name, var in _ENV.items()}
    return pinned if pinned["commit"] else _git_checkout_state()


@functools.lru_cache(maxsize=1)
def _git_checkout_state() -> dict[str, str]:
    commit = _git("rev-parse", "HEAD")
    if not commit:
        return {"commit": "", "branch": "", "repo": "", "dirty": ""}
    return {"commit": commit, "branch": _git("rev-parse", "--abbrev-ref", "HEAD"),
            "repo": _git("config", "--get", "remote.origin.url") or _git("rev-parse", "--show-toplevel"),
            "dirty": "true" if _git("status", "--porcelain", "--untracked-files=no") else "false"}


def _git(*args: str) -> str:
    """One git answer about the checkout that holds the package, '' when git or the checkout is missing."""
    try:
        done = subprocess.run(["git", "-C", str(PACKAGE_DIR), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry for the uid (some containers)
        return "unknown"
