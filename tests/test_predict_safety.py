"""``python -m idhhpc.predict`` facing other people's files: it deletes only what it wrote, and
refuses every crafted file with its reason in bounded memory (an untrained export suffices)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from idhhpc.predict import EXIT_INVALID_INPUT, PREDICTION_FILE, main
from idhhpc.predictor import NonFiniteProbability, predicted_class, predicted_labels
from tests.support.hostile_nifti import CASES, case_patients, write_hostile_cohort
from tests.support.synthetic_cases import write_case
from tests.support.untrained import write_untrained_export

GIB_IN_MIB = 1024
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> Path:
    return write_untrained_export(tmp_path_factory.mktemp("export") / "model.pt")


@pytest.fixture(scope="module")
def patient(tmp_path_factory) -> Path:
    return write_case(tmp_path_factory.mktemp("patient"), "UCSF-PDGM-0004").images["FLAIR"].parent


def _predict(export: Path, patient: Path, out: Path | str, *extra: str) -> int:
    return main(["--checkpoint", str(export), "--patient", str(patient), "--out", str(out), "--device", "cpu", *extra])


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_out_is_replaced_only_when_it_holds_an_earlier_prediction(export, patient, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    assert _predict(export, patient, out) == 0  # an empty folder
    first = json.loads((out / PREDICTION_FILE).read_text())
    assert _predict(export, patient, out) == 0  # an earlier prediction: replaced
    assert json.loads((out / PREDICTION_FILE).read_text())["prob_mutant"] == first["prob_mutant"]
    (out / "notes.txt").write_text("my notes on this patient")
    capsys.readouterr()
    assert _predict(export, patient, out) == EXIT_INVALID_INPUT
    err = capsys.readouterr().err
    assert "notes.txt" in err and "--force" in err
    assert (out / "notes.txt").read_text() == "my notes on this patient"
    assert _predict(export, patient, out, "--force") == 0
    assert not (out / "notes.txt").exists() and (out / PREDICTION_FILE).is_file()
    assert _leftovers(tmp_path) == []


def test_a_folder_of_someone_elses_files_is_refused_and_kept(export, patient, tmp_path, capsys):
    thesis = tmp_path / "thesis"
    (thesis / "chapters").mkdir(parents=True)
    (thesis / "thesis.tex").write_text("\\chapter{IDH}")
    (thesis / "chapters" / "one.tex").write_text("text")
    single = tmp_path / "a-file"
    single.write_text("not a folder")
    for out in (thesis, single):
        assert _predict(export, patient, out) == EXIT_INVALID_INPUT
        assert "--force" in capsys.readouterr().err
    assert (thesis / "thesis.tex").read_text() == "\\chapter{IDH}" and (thesis / "chapters" / "one.tex").is_file()
    assert single.read_text() == "not a folder"
    assert _leftovers(tmp_path) == []


def test_out_dot_and_folders_holding_the_inputs_are_refused_even_with_force(export, patient, tmp_path,
                                                                            monkeypatch, capsys):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    for out in (".", "..", str(patient), str(patient.parent), str(export.parent)):
        assert _predict(export, patient, out, "--force") == EXIT_INVALID_INPUT, out
        err = capsys.readouterr().err
        assert err.startswith("refused: --out") and "Traceback" not in err, err
    assert work.is_dir() and _leftovers(work) == [] and _leftovers(tmp_path) == []
    assert patient.is_dir() and len(list(patient.iterdir())) == 6 and export.is_file()


def test_no_class_is_given_to_a_non_finite_probability():
    assert predicted_class(0.5, 0.5) == 1 and predicted_class(0.49, 0.5) == 0
    for bad in (float("nan"), float("inf"), -float("inf")):
        with pytest.raises(NonFiniteProbability):
            predicted_class(bad, 0.5)
    with pytest.raises(NonFiniteProbability, match="1 of 3"):
        predicted_labels(np.array([0.2, np.nan, 0.9]), 0.5)


def test_every_crafted_file_is_refused_by_predict_in_bounded_memory(export, tmp_path):
    root = tmp_path / "UCSF-PDGM"
    write_hostile_cohort(root)
    done = subprocess.run([sys.executable, "-m", "tests.support.hostile_nifti", "predict", str(export), str(root),
                           str(tmp_path / "out")], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.splitlines()[-1])
    assert "patient folder not found" in report["warm_up"], report["warm_up"]
    for name, (_, _, reason) in CASES.items():
        outcome = report["cases"][name]["outcome"]
        assert outcome.startswith(f"{EXIT_INVALID_INPUT}: refused:") and reason in outcome, (name, outcome)
        assert "Traceback" not in outcome and report["cases"][name]["traced_peak_mib"] < GIB_IN_MIB
    assert report["max_rss_delta_mib"] < GIB_IN_MIB, report["max_rss_delta_mib"]
    assert not (tmp_path / "out").exists(), "a refused patient writes nothing"
    bomb = root / f"{case_patients()['bomb_overlong']}_nifti"
    command = subprocess.run([sys.executable, "-m", "idhhpc.predict", "--checkpoint", str(export), "--patient",
                              str(bomb), "--out", str(tmp_path / "bomb"), "--device", "cpu"],
                             capture_output=True, text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert command.returncode == EXIT_INVALID_INPUT and "inflates to more than" in command.stderr
    assert not (tmp_path / "bomb").exists()
