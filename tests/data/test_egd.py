"""The EGD reader: the layout as distributed, its edge cases with their reasons, and phantom site B."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from idhhpc.config import load_job
from idhhpc.constants import MODALITIES
from idhhpc.data.egd import cohort_site_facts, discover_egd
from idhhpc.phantoms.cli import main as phantoms_main
from idhhpc.phantoms.sites import SITES, site_shape, write_subject

AFFINE = np.diag([1.0, 1.0, 1.0, 1.0])


def _volumes(seed: int, shape=(12, 12, 10)) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {m: rng.uniform(1, 100, shape).astype(np.float32) for m in MODALITIES}


def _tumor(shape=(12, 12, 10)) -> np.ndarray:
    tumor = np.zeros(shape, np.uint8)
    tumor[4:7, 4:7, 4:6] = 2
    return tumor


def _metadata(idh, manufacturer="Philips", field="1.5", age=54) -> dict:
    return {"Genetic_and_Histological_labels": {"IDH": idh}, "Clinical_data": {"Age": age},
            "Scan_characteristics": {"Manufacturer": manufacturer, "Field_strength": field}}


@pytest.fixture
def egd_root(tmp_path):
    root = tmp_path / "EGD"
    write_subject(root, "EGD-0001", _volumes(1), _tumor(), AFFINE, _metadata(1))
    write_subject(root, "EGD-0002", _volumes(2), _tumor(), AFFINE, _metadata(0, "Siemens", "3"))
    write_subject(root, "EGD-0003", _volumes(3), _tumor(), AFFINE, _metadata(-1))
    write_subject(root, "EGD-0004", {k: v for k, v in _volumes(4).items() if k != "T2"}, _tumor(), AFFINE, _metadata(1))
    write_subject(root, "EGD-0005", _volumes(5), _tumor(), AFFINE, None)
    write_subject(root, "EGD-0006", _volumes(6), None, AFFINE, _metadata(0))
    write_subject(root, "EGD-0007", _volumes(7), _tumor(), AFFINE, _metadata("2"))
    write_subject(root, "EGD-0008", _volumes(8), _tumor((12, 12, 9)), AFFINE, _metadata(1))
    brain = root / "METADATA" / "Brain_mask.nii.gz"
    brain.parent.mkdir(parents=True)
    nib.save(nib.Nifti1Image(np.ones((12, 12, 10), np.uint8), AFFINE), brain)
    return root


def test_egd_layout_reads_labels_files_and_the_shared_brain_mask(egd_root):
    cohort = discover_egd(egd_root, list(MODALITIES))
    cases = {case.patient_id: case for case in cohort.cases}
    assert sorted(cases) == ["EGD-0001", "EGD-0002", "EGD-0006"]
    assert (cases["EGD-0001"].label, cases["EGD-0002"].label) == (1, 0)
    assert cases["EGD-0001"].images["T1c"].name == "T1GD.nii.gz"
    assert cases["EGD-0001"].tumor_mask.name == "MASK.nii.gz"
    assert cases["EGD-0001"].brain_mask == egd_root / "METADATA" / "Brain_mask.nii.gz"


def test_egd_edge_cases_each_get_a_clear_reason(egd_root):
    cohort = discover_egd(egd_root, list(MODALITIES))
    reasons = dict(cohort.quarantined)
    assert "unlabeled IDH status (-1" in reasons["EGD-0003"]
    assert "missing T2" in reasons["EGD-0004"]
    assert "missing metadata.json" in reasons["EGD-0005"]
    assert "unrecognised IDH value" in reasons["EGD-0007"]
    assert "MASK.nii.gz" in reasons["EGD-0008"] and "differs" in reasons["EGD-0008"]
    no_mask = next(case for case in cohort.cases if case.patient_id == "EGD-0006")
    assert no_mask.tumor_mask is None  # kept and scored; no Dice without a mask


def test_site_facts_come_from_scan_characteristics(egd_root):
    facts = cohort_site_facts(egd_root)
    assert facts["EGD-0002"] == {"manufacturer": "Siemens", "field_strength": "3", "age": "54"}
    assert facts["EGD-0005"] == {"manufacturer": "", "field_strength": "", "age": ""}


def test_a_job_reads_the_egd_layout_and_an_external_cohort_needs_a_root(tmp_path):
    job = load_job(None, [f"data.root={tmp_path}", "data.layout=egd"])
    assert job.data.layout == "egd"
    external = load_job(None, [f"external=[{{name: siteb, layout: egd, root: {tmp_path}}}]"])
    assert external.stages[-1] == "external" and external.external[0].data_config(external.data).layout == "egd"
    with pytest.raises(ValueError, match="data.root is required"):
        load_job(None, ["external=[{name: siteb, layout: egd}]"])
    with pytest.raises(ValueError, match="letters, digits"):
        load_job(None, [f"external=[{{name: ../x, root: {tmp_path}}}]"])


def test_phantom_site_b_is_another_site_in_the_egd_layout(tmp_path):
    out = tmp_path / "siteB"
    assert phantoms_main([str(out), "--site", "B", "--patients", "6", "--seed", "3", "--shape", "30", "30", "20",
                          "--unknown", "1"]) == 0
    cohort = discover_egd(out, list(MODALITIES))
    assert len(cohort.cases) == 6
    assert len(cohort.quarantined) == 1 and "unlabeled IDH status (-1" in cohort.quarantined[0][1]
    profile = SITES["B"]
    image = nib.load(cohort.cases[0].images["FLAIR"])
    assert image.shape == site_shape(profile, (30, 30, 20)) == (24, 24, 10)
    spacing = image.header.get_zooms()
    assert spacing[2] > 1.5 * spacing[0]  # thicker slices than in-plane voxels
    labels = [json.loads((p.parent / "metadata.json").read_text())["Genetic_and_Histological_labels"]["IDH"]
              for p in (c.images["FLAIR"] for c in cohort.cases)]
    assert set(labels) <= {0, 1} and sum(labels) == round(6 * profile.mutant_fraction)
    assert {f["manufacturer"] for f in cohort_site_facts(out).values()} <= {s.manufacturer for s in profile.scanners}
    assert (out / "oracle.csv").read_text().count("EGD-") == 7
