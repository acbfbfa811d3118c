"""One tiny launch tracked by a real ``mlflow server``, shared by the tracking and UI tests.

The launch goes through ``python -m idhhpc.launch`` itself (debug executor, in this process):
cohort → preprocess → split → cv (2 folds) → fit → evaluate → explain, two epochs so that the
training curves are curves. It takes well under a minute; every test reads what it left.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
from pathlib import Path
from unittest import mock

import pytest
import yaml
from mlflow.tracking import MlflowClient

from idhhpc.config import JobConfig
from idhhpc.launch import main as launch
from tests.support.jobs import tiny_overrides
from tests.support.mlflow_server import MlflowServer

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def tracked_launch(tmp_path_factory):
    base = tmp_path_factory.mktemp("tracked-launch")
    server = MlflowServer(base / "mlflow").start()
    # The headline is the final fit, the model the registry serves, so the served answer and the
    # evaluate stage's predictions.csv score the same model (with the fold ensemble as headline
    # they agreed only where both probabilities saturated).
    overrides = tiny_overrides(base / "work", base / "cohort", f"tracking.uri={server.url}", "train.epochs=2",
                               "evaluate.ensemble=fit")
    args = ["--executor", "debug", "-q"] + [item for o in overrides for item in ("--set", o)]
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed), mock.patch.dict(os.environ):  # the launcher pins git state in env
            code = launch(args)
        assert code == 0, printed.getvalue()
        client = MlflowClient(server.url)
        experiment = client.get_experiment_by_name("idhhpc")
        runs = client.search_runs([experiment.experiment_id])
        yield {"server": server, "client": client, "experiment": experiment, "printed": printed.getvalue(),
               "runs": {run.info.run_name: run for run in runs}, "work": base / "work", "cohort": base / "cohort",
               "config": JobConfig(**yaml.safe_load((base / "work" / "config.yaml").read_text())),
               "commit": subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True,
                                        text=True, check=True).stdout.strip()}
    finally:
        server.stop()
