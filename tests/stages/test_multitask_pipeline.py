"""The multi-task job end to end on a tiny phantom cohort: Dice in MLflow and the reports, a
fit export that carries its tumour locator, mask-free prediction through the CLI and the
MLflow pyfunc, and the take-off rule on a fold that cannot learn."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient

from idhhpc.config import load_job
from idhhpc.constants import MODEL_FILE, SEGMENTATION_FILE, TUMOR_MASK_SUFFIX
from idhhpc.data.splits import load_splits
from idhhpc.phantoms import generate_cohort
from idhhpc.predict import main as predict_main
from idhhpc.stages import cv as cv_stage
from idhhpc.train.takeoff import TAKEOFF_FILE
from idhhpc.workdir import WorkDir
from tests.support.pipeline import run_in_process

MULTITASK = ["model.head=segment+classify", "model.readout=compartments", "model.norm=group", "model.trainable_stages=-1",
             "preprocess.roi=tumor", "preprocess.locator=true", "train.augment=flips"]


def _config(base: Path, cohort: Path, *extra: str):
    return load_job(None, [f"work_dir={base}", f"data.root={cohort}", "data.phantom=null", "data.min_patients=8",
                           "preprocess.size=32", "preprocess.shard_size=8", "split.folds=2", "model.variant=b0",
                           "train.epochs=2", "train.micro_batch=4", "train.accumulate=1", "train.num_workers=0",
                           "train.device=cpu", "evaluate.bootstrap=100", *MULTITASK, *extra])


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mt-cohort")
    generate_cohort(root, 16, seed=5, shape=(48, 48, 32), mutant_fraction=0.4, progress=False)
    return root


@pytest.fixture(scope="module")
def trained(tmp_path_factory, cohort):
    base = tmp_path_factory.mktemp("mt-work")
    config = _config(base, cohort)
    run_in_process(config, ["cohort", "preprocess", "split", "cv", "fit", "evaluate"])
    return config


@pytest.mark.slow
def test_folds_log_dice_per_compartment_to_mlflow_and_the_cv_summary(trained):
    work = WorkDir(trained.work_dir)
    summary = json.loads(work.cv_summary.read_text())
    assert set(summary["dice"]) == {"necrosis", "edema", "enhancing", "tumor"}
    assert 0.0 <= summary["dice"]["tumor"] <= 1.0
    client = MlflowClient(f"sqlite:///{work.root / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()],
                              "params.role = 'cv'")
    assert len(runs) == 2
    for run in runs:
        assert "val/dice_tumor" in run.data.metrics and "train/segment_loss" in run.data.metrics
    assert "Segmentation (the multi-task decoder" in (work.cv_reports / "report.md").read_text()


@pytest.mark.slow
def test_evaluation_scores_the_test_patients_without_their_masks(trained):
    work = WorkDir(trained.work_dir)
    report = (work.reports / "report.md").read_text()
    assert "## Without the expert mask" in report and "mean Dice: necrosis" in report
    client = MlflowClient(f"sqlite:///{work.root / 'mlflow.db'}")
    run, = client.search_runs([e.experiment_id for e in client.search_experiments()], "params.role = 'evaluate'")
    metrics = run.data.metrics
    assert 0.0 <= metrics["test/mask_free_folds_agreement"] <= 1.0 and "test/dice_tumor" in metrics


@pytest.mark.slow
def test_fit_export_carries_the_tumour_locator(trained):
    payload = torch.load(WorkDir(trained.work_dir).checkpoints("fit") / MODEL_FILE, weights_only=True)
    assert payload["locator"] and all(torch.is_tensor(v) for v in payload["locator"].values())


def _patient_without_mask(trained, cohort: Path, tmp_path: Path) -> tuple[str, Path]:
    patient = load_splits(trained)["test"][0]
    folder = tmp_path / f"{patient}_nifti"
    shutil.copytree(cohort / f"{patient}_nifti", folder)
    for mask in folder.glob(f"*{TUMOR_MASK_SUFFIX}*"):
        mask.unlink()
    return patient, folder


@pytest.mark.slow
def test_predict_finds_the_tumour_itself_and_reports_dice_when_a_mask_is_given(trained, cohort, tmp_path):
    checkpoint = WorkDir(trained.work_dir).checkpoints("fit") / MODEL_FILE
    patient, folder = _patient_without_mask(trained, cohort, tmp_path)
    assert predict_main(["--checkpoint", str(checkpoint), "--patient", str(folder), "--out", str(tmp_path / "a"),
                         "--device", "cpu"]) == 0
    located = json.loads((tmp_path / "a" / "prediction.json").read_text())
    assert located["crop"] == "located" and "dice" not in located["segmentation"]
    assert (tmp_path / "a" / SEGMENTATION_FILE).is_file()
    mask = next((cohort / f"{patient}_nifti").glob(f"*{TUMOR_MASK_SUFFIX}*"))
    assert predict_main(["--checkpoint", str(checkpoint), "--patient", str(folder), "--tumor-mask", str(mask),
                         "--out", str(tmp_path / "b"), "--device", "cpu"]) == 0
    given = json.loads((tmp_path / "b" / "prediction.json").read_text())
    assert given["crop"] == "tumor mask" and set(given["segmentation"]["dice"]) >= {"tumor", "edema"}
    assert 0.0 <= located["prob_mutant"] <= 1.0 and 0.0 <= given["prob_mutant"] <= 1.0


@pytest.mark.slow
def test_registered_pyfunc_answers_a_folder_without_a_mask(trained, cohort, tmp_path, monkeypatch):
    _, folder = _patient_without_mask(trained, cohort, tmp_path)
    monkeypatch.setenv("IDHHPC_PATIENT_ROOTS", str(tmp_path))
    mlflow.set_tracking_uri(f"sqlite:///{WorkDir(trained.work_dir).root / 'mlflow.db'}")
    try:
        model = mlflow.pyfunc.load_model("models:/idhhpc-idh-b0/1")
        answer = model.predict(pd.DataFrame({"patient_dir": [str(folder)]}))
    finally:
        mlflow.set_tracking_uri(None)
    assert 0.0 <= float(answer["prob_mutant"][0]) <= 1.0 and answer["label"][0].startswith("IDH-")


@pytest.mark.slow
def test_a_fold_that_cannot_learn_is_restarted_and_counted(tmp_path, cohort):
    """A learning rate of 1e-9 is a fold that never takes off: the rule sees its loss unchanged
    after the check epoch, restarts once from another seed, and the summary counts it."""
    config = _config(tmp_path, cohort, "train.max_lr=1e-9", "train.epochs=2", "train.takeoff_epoch=1",
                     "train.takeoff_restarts=1")
    run_in_process(config, ["cohort", "preprocess", "split", "cv"])
    work = WorkDir(config.work_dir)
    for fold in ("fold-0", "fold-1"):
        failed = json.loads((work.checkpoints(fold) / TAKEOFF_FILE).read_text())["failed"]
        assert len(failed) == 1 and failed[0]["loss_ratio"] > config.train.takeoff_ratio
        selection = json.loads(work.selection(fold).read_text())
        assert selection["takeoff"]["attempts"] == 2 and selection["takeoff"]["seed"] != config.seed
        assert len(selection["history"]) == 2  # the last attempt trains to the end
    assert json.loads(work.cv_summary.read_text())["takeoff_restarts"] == [1, 1]
    fold_step = next(step for step in cv_stage.STEPS if step.name == "cv")
    assert fold_step.outputs_verify(config)  # a restarted run is finished: a relaunch skips it
