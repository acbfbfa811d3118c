"""Phantom cohorts: the UCSF-PDGM layout, its metadata quirks, reproducibility and IDH phenotypes."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from idhhpc.ids import UnsafePatientId
from idhhpc.phantoms import cli as phantoms_cli
from idhhpc.phantoms import cohort as phantoms
from idhhpc.phantoms.anatomy import load_anatomy
from idhhpc.phantoms.clinical import METADATA_COLUMNS, MUTANT_SPELLINGS, clinical_row
from idhhpc.phantoms.cohort import (
    generate_cohort,
    plan_cohort,
    render_patient,
    write_patient,
)
from idhhpc.phantoms.mri import SIGNAL

SHAPE = (48, 48, 32)
N_PATIENTS = 20
IMAGE_SUFFIXES = ("FLAIR", "T1", "T1c", "T2", "brain_segmentation", "tumor_segmentation")


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("phantoms")
    generate_cohort(out, N_PATIENTS, seed=3, shape=SHAPE, progress=False)
    return out


def _rows(root: Path) -> list[dict[str, str]]:
    with open(root / "UCSF-PDGM-metadata_v2.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def _load(path: Path) -> np.ndarray:
    return np.asarray(nib.load(path).dataobj)


def _folder_of(csv_id: str) -> str:
    number, _, followup = csv_id.removeprefix("UCSF-PDGM-").partition("_")
    return f"UCSF-PDGM-{int(number):04d}" + (f"_{followup}" if followup else "")


def test_layout_has_four_digit_folders_with_every_file(cohort):
    folders = sorted(p.name for p in cohort.iterdir() if p.is_dir())
    assert len(folders) == N_PATIENTS + 2
    for name in folders:
        assert re.fullmatch(r"UCSF-PDGM-\d{4}(_FU\d{3}d)?_nifti", name), name
        prefix = name.removesuffix("_nifti")
        expected = sorted(f"{prefix}_{suffix}.nii.gz" for suffix in IMAGE_SUFFIXES)
        assert sorted(p.name for p in (cohort / name).iterdir()) == expected


def test_patient_numbers_start_near_four_and_skip_some():
    numbers = [p.number for p in plan_cohort(200, seed=0) if p.followup is None]
    assert 1 <= numbers[0] <= 6
    assert numbers == sorted(set(numbers))
    assert numbers[-1] - numbers[0] + 1 > len(numbers)


def test_metadata_columns_ids_and_folders_match(cohort):
    rows = _rows(cohort)
    with open(cohort / "UCSF-PDGM-metadata_v2.csv") as fh:
        assert tuple(next(csv.reader(fh))) == METADATA_COLUMNS
    for row in rows:
        assert re.fullmatch(r"UCSF-PDGM-\d{3}(_FU\d{3}d)?", row["ID"]), row["ID"]
    assert {f"{_folder_of(r['ID'])}_nifti" for r in rows} == {p.name for p in cohort.iterdir() if p.is_dir()}


def test_idh_spellings_and_class_counts(cohort):
    baseline = [r for r in _rows(cohort) if "_FU" not in r["ID"]]
    idh = [r["IDH"] for r in baseline]
    assert set(idh) <= {"wildtype", "unknown", "", *MUTANT_SPELLINGS}
    assert sum(v in MUTANT_SPELLINGS for v in idh) == round(N_PATIENTS * 103 / 501)
    assert sum(v == "wildtype" for v in idh) == N_PATIENTS - round(N_PATIENTS * 103 / 501)
    assert sum(v in ("unknown", "") for v in idh) == 1


def test_mutants_are_younger_than_wildtype():
    ages = {idh: [int(clinical_row(np.random.default_rng(i), 4, idh)["Age at MRI"]) for i in range(40)]
            for idh in ("mutant", "wildtype")}
    assert np.mean(ages["mutant"]) + 10 < np.mean(ages["wildtype"])


def test_diagnosis_agrees_with_idh(cohort):
    for row in _rows(cohort):
        if row["IDH"] == "wildtype":
            assert "IDH-wildtype" in row["Final pathologic diagnosis (WHO 2021)"]
        elif row["IDH"] in MUTANT_SPELLINGS:
            assert "IDH-mutant" in row["Final pathologic diagnosis (WHO 2021)"]


def test_followup_rescans_the_row_before_it(cohort):
    rows = _rows(cohort)
    [position] = [i for i, r in enumerate(rows) if "_FU" in r["ID"]]
    followup, base = rows[position], rows[position - 1]
    assert followup["ID"].startswith(base["ID"] + "_FU")
    assert followup["IDH"] == base["IDH"]
    base_dir, fu_dir = cohort / f"{_folder_of(base['ID'])}_nifti", cohort / f"{_folder_of(followup['ID'])}_nifti"
    base_seg = _load(next(base_dir.glob("*_tumor_segmentation.nii.gz"))) > 0
    fu_seg = _load(next(fu_dir.glob("*_tumor_segmentation.nii.gz"))) > 0
    assert 2 * (base_seg & fu_seg).sum() / (base_seg.sum() + fu_seg.sum()) > 0.6
    assert not np.array_equal(_load(next(base_dir.glob("*_T2.nii.gz"))), _load(next(fu_dir.glob("*_T2.nii.gz"))))


def test_tumor_labels_are_brats_labels_inside_the_brain(cohort):
    for folder in (p for p in cohort.iterdir() if p.is_dir()):
        tumor = _load(next(folder.glob("*_tumor_segmentation.nii.gz")))
        brain = _load(next(folder.glob("*_brain_segmentation.nii.gz")))
        assert tumor.dtype == np.uint8 and brain.dtype == np.uint8
        assert set(np.unique(tumor)) <= {0, 1, 2, 4}
        assert tumor.any() and not (tumor[brain == 0]).any()
        flair = _load(next(folder.glob("*_FLAIR.nii.gz")))
        assert flair.shape == SHAPE and flair.dtype == np.float32 and not flair[brain == 0].any()


def test_affine_is_diagonal_centred_and_shared(cohort):
    folder = next(p for p in cohort.iterdir() if p.is_dir())
    affines = [nib.load(f).affine for f in folder.iterdir()]
    assert all(np.allclose(a, affines[0]) for a in affines)
    np.testing.assert_allclose(np.diag(affines[0])[:3], [240 / 48, 240 / 48, 155 / 32])
    np.testing.assert_allclose(affines[0][:3, :3] @ ((np.array(SHAPE) - 1) / 2) + affines[0][:3, 3], 0, atol=1e-6)


def test_same_seed_same_arrays_other_seed_different(tmp_path):
    runs = {}
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        generate_cohort(tmp_path / name, 2, seed=seed, shape=(32, 32, 24), progress=False)
        runs[name] = {p.relative_to(tmp_path / name): _load(p) for p in sorted((tmp_path / name).rglob("*.nii.gz"))}
    assert runs["a"].keys() == runs["b"].keys()
    assert all(np.array_equal(runs["a"][k], runs["b"][k]) for k in runs["a"])
    assert not np.array_equal(runs["a"][next(k for k in runs["a"] if "T1c" in k.name)],
                              runs["c"][next(k for k in runs["c"] if "T1c" in k.name)])


def test_normal_tissue_contrast_follows_mri_physics():
    anatomy = load_anatomy(SHAPE)
    volumes = render_patient(plan_cohort(1, seed=0)[0], anatomy, seed=0)
    healthy = volumes["tumor_segmentation"] == 0
    tissue = {name: healthy & (getattr(anatomy, name) > 0.8) for name in ("csf", "gm", "wm")}
    mean = {c: {t: volumes[c][m].mean() for t, m in tissue.items()} for c in ("T1", "T2", "FLAIR")}
    assert mean["T1"]["wm"] > mean["T1"]["gm"] > mean["T1"]["csf"]
    assert mean["T2"]["csf"] > mean["T2"]["gm"] > mean["T2"]["wm"]
    assert mean["FLAIR"]["gm"] > mean["FLAIR"]["wm"] > mean["FLAIR"]["csf"]
    assert SIGNAL["FLAIR"]["edema"] > SIGNAL["FLAIR"]["gm"]


def test_mutants_enhance_less_than_wildtype():
    anatomy = load_anatomy(SHAPE)
    plan = [p for p in plan_cohort(16, seed=11, crossover=0.0, mutant_fraction=0.5) if p.followup is None]
    enhancing_voxels = {"mutant": [], "wildtype": []}
    for patient in plan:
        labels = render_patient(patient, anatomy, seed=11)["tumor_segmentation"]
        enhancing_voxels[patient.idh].append((labels == 4).sum())
    assert np.mean(enhancing_voxels["mutant"]) < 0.5 * np.mean(enhancing_voxels["wildtype"])


def test_crossover_swaps_each_phenotype_with_probability_crossover():
    labelled = [p for p in plan_cohort(2000, seed=0, crossover=0.2) if p.idh != "unknown" and p.followup is None]
    for idh in ("mutant", "wildtype"):
        members = [p for p in labelled if p.idh == idh]
        swapped = sum(p.mutant_like != (idh == "mutant") for p in members)
        assert abs(swapped / len(members) - 0.2) < 4 * np.sqrt(0.2 * 0.8 / len(members))
    for crossover, same in ((0.0, True), (1.0, False)):
        labelled = [p for p in plan_cohort(50, seed=0, crossover=crossover) if p.idh != "unknown"]
        assert all((p.mutant_like == (p.idh == "mutant")) == same for p in labelled)


def test_two_patients_get_one_of_each_class_and_no_extras():
    plan = plan_cohort(2, seed=0, mutant_fraction=0.01)
    assert sorted(p.idh for p in plan) == ["mutant", "wildtype"]


def test_t1gad_name_and_bias_variants(tmp_path):
    generate_cohort(tmp_path / "plain", 1, seed=2, shape=(32, 32, 24), progress=False)
    generate_cohort(tmp_path / "bias", 1, seed=2, shape=(32, 32, 24), t1c_name="T1gad", with_bias=True, progress=False)
    folder = next(p for p in (tmp_path / "bias").iterdir() if p.is_dir())
    prefix = folder.name.removesuffix("_nifti")
    for contrast in ("FLAIR", "T1", "T1gad", "T2"):
        assert (folder / f"{prefix}_{contrast}.nii.gz").exists()
        assert (folder / f"{prefix}_{contrast}_bias.nii.gz").exists()
    assert not list(folder.glob("*_T1c*"))
    plain_flair = _load(tmp_path / "plain" / folder.name / f"{prefix}_FLAIR.nii.gz")
    np.testing.assert_array_equal(_load(folder / f"{prefix}_FLAIR_bias.nii.gz"), plain_flair)
    assert not np.array_equal(_load(folder / f"{prefix}_FLAIR.nii.gz"), plain_flair)


def test_bad_arguments_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="t1c_name"):
        generate_cohort(tmp_path, 2, shape=SHAPE, t1c_name="T1ce", progress=False)
    with pytest.raises(ValueError, match="mutant_fraction"):
        plan_cohort(10, mutant_fraction=1.5)


def test_write_patient_stores_bool_as_uint8_and_rejects_unsafe_ids(tmp_path):
    mask = np.zeros((8, 8, 8), dtype=bool)
    mask[2:5] = True
    [path] = write_patient(tmp_path / "UCSF-PDGM-0099_nifti", "UCSF-PDGM-0099", {"brain_segmentation": mask}, np.eye(4))
    assert path.name == "UCSF-PDGM-0099_brain_segmentation.nii.gz"
    assert _load(path).dtype == np.uint8 and _load(path).sum() == mask.sum()
    with pytest.raises(UnsafePatientId):
        write_patient(tmp_path / "x_nifti", "../escape", {"T1": mask}, np.eye(4))


def test_cli_writes_a_cohort(tmp_path, capsys):
    out = tmp_path / "cli"
    argv = [str(out), "--patients", "2", "--seed", "1", "--shape", "32", "32", "24", "--unknown", "1"]
    argv += ["--followups", "1"]
    assert phantoms_cli.main(argv) == 0
    assert capsys.readouterr().out.strip().endswith("UCSF-PDGM-metadata_v2.csv")
    rows = _rows(out)
    assert len(rows) == 4 and sum("_FU" in r["ID"] for r in rows) == 1
    assert len([p for p in out.iterdir() if p.is_dir()]) == 4
