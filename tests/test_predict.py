"""``python -m idhhpc.predict`` against the pipeline that produced its model.

A tiny phantom cohort goes through every stage in-process; predicting one held-out test
patient straight from its raw folder must reproduce the evaluation stage's probability, which
only holds if discovery, preprocessing and the network are exactly those of training.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import torch

from idhhpc.config import load_job
from idhhpc.constants import MODEL_FILE
from idhhpc.data.splits import load_splits
from idhhpc.phantoms import generate_cohort
from idhhpc.predict import EXIT_INVALID_INPUT, PREDICTION_FILE, main
from idhhpc.workdir import WorkDir
from tests.support.pipeline import run_in_process

PHANTOM_SHAPE = (48, 48, 32)
MODALITY_FILES = {"FLAIR": "FLAIR", "T1": "T1", "T1c": "T1c", "T2": "T2"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Cohort → preprocess → split → fit → evaluate, with the smallest settings that still train."""
    base = tmp_path_factory.mktemp("predict")
    data_root = base / "cohort"
    generate_cohort(data_root, 16, seed=3, shape=PHANTOM_SHAPE, mutant_fraction=0.4, progress=False)
    config = load_job(None, [f"work_dir={base / 'work'}", f"data.root={data_root}", "data.phantom=null",
                             "data.min_patients=8", "preprocess.size=32", "preprocess.shard_size=8",
                             "split.folds=2", "model.variant=b0", "model.trainable_stages=1", "model.head=classify",
                             "preprocess.locator=false",
                             "train.epochs=1", "train.micro_batch=2", "train.accumulate=1", "train.num_workers=0",
                             "train.device=cpu", "evaluate.bootstrap=100"])
    run_in_process(config, ["cohort", "preprocess", "split", "fit", "evaluate"])
    work = WorkDir(config.work_dir)
    with open(work.reports / "predictions.csv") as fh:
        evaluated = {row["patient_id"]: float(row["prob_mutant"]) for row in csv.DictReader(fh)}
    test_patient = load_splits(config)["test"][0]
    return {"config": config, "checkpoint": work.checkpoints("fit") / MODEL_FILE, "evaluated": evaluated,
            "patient": test_patient, "folder": data_root / f"{test_patient}_nifti", "base": base}


def _copy_patient(trained, tmp_path: Path, name: str | None = None) -> Path:
    target = tmp_path / (name or trained["folder"].name)
    shutil.copytree(trained["folder"], target)
    return target


def test_prediction_matches_the_evaluation_stage(trained, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["--checkpoint", str(trained["checkpoint"]), "--patient", str(trained["folder"]),
                 "--out", str(out), "--device", "cpu"])
    printed = capsys.readouterr().out
    assert code == 0
    prediction = json.loads((out / PREDICTION_FILE).read_text())
    expected = trained["evaluated"][trained["patient"]]
    assert prediction["patient_id"] == trained["patient"]
    assert prediction["prob_mutant"] == pytest.approx(expected, abs=1e-5)
    assert printed.splitlines()[0].startswith(f"{trained['patient']}: IDH-")
    assert f"P(IDH mutant) = {prediction['prob_mutant']:.4f}" in printed
    assert prediction["predicted"] == int(prediction["prob_mutant"] >= prediction["threshold"])


def test_outputs_hold_overlay_cams_in_both_spaces_and_tumor_statistics(trained, tmp_path):
    import nibabel as nib

    out = tmp_path / "out"
    assert main(["--checkpoint", str(trained["checkpoint"]), "--patient", str(trained["folder"]),
                 "--out", str(out), "--device", "cpu"]) == 0
    prediction = json.loads((out / PREDICTION_FILE).read_text())
    headline = next(c for c in prediction["explanation"]["cams"] if c["predicted_class"])
    files = {kind: out / name for kind, name in headline["files"].items()}
    assert files["overlay"].suffix == ".png" and files["overlay"].stat().st_size > 0
    assert nib.load(files["nifti_model"]).shape == (32, 32, 32)
    assert nib.load(files["nifti_native"]).shape == PHANTOM_SHAPE
    stats = headline["statistics"]
    assert 0.0 < stats["chance_energy_in_tumor"] < 1.0
    assert stats["energy_in_tumor"] is None or 0.0 <= stats["energy_in_tumor"] <= 1.0  # None: CAM zero in the brain
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "staging folders left behind"


def test_a_folder_of_files_named_by_modality_gives_the_same_probability(trained, tmp_path):
    plain = tmp_path / "plain-patient"
    plain.mkdir()
    for path in trained["folder"].iterdir():
        suffix = path.name.removeprefix(f"{trained['patient']}_")
        shutil.copy(path, plain / suffix)
    assert main(["--checkpoint", str(trained["checkpoint"]), "--patient", str(plain),
                 "--out", str(tmp_path / "out"), "--device", "cpu"]) == 0
    prediction = json.loads((tmp_path / "out" / PREDICTION_FILE).read_text())
    assert prediction["patient_id"] == "plain-patient"
    assert prediction["prob_mutant"] == pytest.approx(trained["evaluated"][trained["patient"]], abs=1e-5)


def _refused(trained, folder: Path, out: Path, capsys) -> str:
    code = main(["--checkpoint", str(trained["checkpoint"]), "--patient", str(folder), "--out", str(out),
                 "--device", "cpu"])
    captured = capsys.readouterr()
    assert code == EXIT_INVALID_INPUT
    assert captured.out == ""
    assert not out.exists() and not out.parent.exists(), "a refused patient must write nothing"
    return captured.err


def test_missing_modality_is_refused_with_exit_2(trained, tmp_path, capsys):
    folder = _copy_patient(trained, tmp_path)
    (folder / f"{trained['patient']}_T2.nii.gz").unlink()
    err = _refused(trained, folder, tmp_path / "results" / "out", capsys)
    assert "missing T2" in err


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_file_is_refused_with_exit_2(trained, tmp_path, capsys, damage):
    folder = _copy_patient(trained, tmp_path)
    flair = folder / f"{trained['patient']}_FLAIR.nii.gz"
    data = flair.read_bytes()
    flair.write_bytes(b"not a nifti at all" if damage == "garbage" else data[: len(data) // 2])
    err = _refused(trained, folder, tmp_path / "results" / "out", capsys)
    assert "FLAIR" in err and ("unreadable" in err or "rejected" in err)


def test_shape_mismatch_is_refused_with_exit_2(trained, tmp_path, capsys):
    import nibabel as nib
    import numpy as np

    folder = _copy_patient(trained, tmp_path)
    t1 = folder / f"{trained['patient']}_T1.nii.gz"
    image = nib.load(t1)
    nib.save(nib.Nifti1Image(np.zeros((40, 40, 30), np.float32), image.affine), t1)
    err = _refused(trained, folder, tmp_path / "results" / "out", capsys)
    assert "shape" in err


def test_a_file_that_is_not_a_model_export_is_refused(trained, tmp_path, capsys):
    fake = tmp_path / "weights.pt"
    torch.save({"model": {}}, fake)
    code = main(["--checkpoint", str(fake), "--patient", str(trained["folder"]), "--out", str(tmp_path / "out")])
    assert code == EXIT_INVALID_INPUT
    assert "not an idhhpc model export" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_flip_scoring_averages_the_logits_over_the_volume_and_its_flips():
    from idhhpc.model import build_model
    from idhhpc.predictor import iter_logits

    model = build_model("b0", dropout=0.0, norm="group").eval()  # per-volume norms: logits far from 0 at init
    torch.nn.init.normal_(model.net._fc.weight, std=1.0, generator=torch.Generator().manual_seed(1))
    volumes = torch.randn(2, 4, 32, 32, 32, generator=torch.Generator().manual_seed(0))
    batch = {"image": volumes}
    with torch.no_grad():
        plain, _ = next(iter_logits(model, [batch], torch.device("cpu")))
        model.score_flips = True
        flipped, _ = next(iter_logits(model, [batch], torch.device("cpu")))
        expected = torch.stack([model(v) for v in (volumes, *(volumes.flip(a) for a in (2, 3, 4)))]).mean(0)
    assert torch.allclose(plain, model(volumes), atol=1e-6)
    assert torch.allclose(flipped, expected, atol=1e-6) and not torch.allclose(flipped, plain, atol=1e-4)
