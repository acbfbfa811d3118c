"""Ingestion of the UCSF-PDGM layout and the generic CSV: every quirk and every bad input."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from idhhpc.data import cohort as ingest
from idhhpc.data.ucsf_pdgm import parse_id, parse_idh
from tests.support.ucsf_layout import write_metadata, write_patient, write_volume

MODALITIES = ["FLAIR", "T1", "T1c", "T2"]


def reasons(cohort: ingest.Cohort) -> dict[str, str]:
    return dict(cohort.quarantined)


@pytest.mark.parametrize("raw, canonical, followup", [
    ("UCSF-PDGM-004", "UCSF-PDGM-0004", None),
    ("UCSF-PDGM-0004", "UCSF-PDGM-0004", None),
    ("UCSF-PDGM-0391_FU016d", "UCSF-PDGM-0391", "FU016d"),
    ("UCSF-PDGM-391_FU016d", "UCSF-PDGM-0391", "FU016d"),
])
def test_ids_three_and_four_digits_map_to_one_patient(raw, canonical, followup):
    parsed = parse_id(raw)
    assert (parsed.canonical, parsed.followup) == (canonical, followup)


@pytest.mark.parametrize("value, label", [
    ("wildtype", 0), ("mutated (NOS)", 1), ("IDH1 p.R132H", 1), ("IDH1 p.R132C", 1), ("IDH2 p.R172K", 1),
    ("unknown", None), ("", None), ("banana", None),
])
def test_every_idh_spelling(value, label):
    assert parse_idh(value)[0] == label


WILDTYPE_WORDING = ["wildtype", "Wild Type", "wild-type", "WT", "IDH-wildtype", "IDH1 wildtype", "IDH1-wildtype",
                    "IDH1/2 wild-type", "negative", "IDH1 negative", "not mutated", "non-mutant", "Non mutant",
                    "no mutation detected", "mutation not detected", "0"]
MUTANT_WORDING = ["mutant", "mutated", "mutated (NOS)", "IDH-mutant", "IDH1 mutation", "Mut", "positive",
                  "IDH1 positive", "IDH1 p.R132H", "IDH1 R132H", "IDH2 p.R172K", "1"]
CONTRADICTORY = ["wildtype / mutated", "IDH1 p.R132H negative", "mutant, wild type", "not wildtype",
                 "positive (wt)"]


@pytest.mark.parametrize("value", WILDTYPE_WORDING)
def test_wildtype_and_negated_wording_reads_wildtype(value):
    assert parse_idh(value) == (0, None)


@pytest.mark.parametrize("value", MUTANT_WORDING)
def test_mutant_wording_and_named_variants_read_mutant(value):
    assert parse_idh(value) == (1, None)


@pytest.mark.parametrize("value", CONTRADICTORY)
def test_both_kinds_of_wording_are_refused_with_the_reason(value):
    label, problem = parse_idh(value)
    assert label is None and "both wildtype and mutant wording" in problem and value in problem


@pytest.mark.parametrize("value", ["IDH1", "IDH2", "banana", "see report"])
def test_a_gene_name_alone_is_no_label(value):
    label, problem = parse_idh(value)
    assert label is None and "unrecognised IDH value" in problem


def test_ucsf_layout_quirks(tmp_path):
    write_patient(tmp_path, "UCSF-PDGM-0004")
    write_patient(tmp_path, "UCSF-PDGM-0005", contrast="T1gad")
    write_patient(tmp_path, "UCSF-PDGM-0391")
    write_patient(tmp_path, "UCSF-PDGM-0391_FU016d")
    write_patient(tmp_path, "UCSF-PDGM-0007")
    write_patient(tmp_path, "UCSF-PDGM-0009")
    write_metadata(tmp_path, [("UCSF-PDGM-004", "wildtype"), ("UCSF-PDGM-005", "IDH1 p.R132H"),
                              ("UCSF-PDGM-391", "IDH2 p.R172K"), ("UCSF-PDGM-391_FU016d", "IDH2 p.R172K"),
                              ("UCSF-PDGM-007", "unknown"), ("UCSF-PDGM-008", "wildtype")])
    cohort = ingest.discover_ucsf_pdgm(tmp_path, None, MODALITIES, bias_corrected=False)
    labels = {case.patient_id: case.label for case in cohort.cases}
    assert labels == {"UCSF-PDGM-0004": 0, "UCSF-PDGM-0005": 1, "UCSF-PDGM-0391": 1}
    assert cohort.cases[1].images["T1c"].name == "UCSF-PDGM-0005_T1gad.nii.gz"
    assert cohort.cases[0].tumor_mask.name.endswith("_tumor_segmentation.nii.gz")
    why = reasons(cohort)
    assert "follow-up" in why["UCSF-PDGM-391_FU016d"] and "follow-up" in why["UCSF-PDGM-0391_FU016d"]
    assert "unlabeled IDH" in why["UCSF-PDGM-0007"]
    assert "no image folder" in why["UCSF-PDGM-0008"]
    assert "has no row" in why["UCSF-PDGM-0009"]


def test_contradictory_idh_value_is_quarantined_with_its_reason(tmp_path):
    write_patient(tmp_path, "UCSF-PDGM-0004")
    write_patient(tmp_path, "UCSF-PDGM-0005")
    write_metadata(tmp_path, [("UCSF-PDGM-004", "IDH1 wildtype"), ("UCSF-PDGM-005", "IDH1 p.R132H negative")])
    cohort = ingest.discover_ucsf_pdgm(tmp_path, None, MODALITIES, bias_corrected=False)
    assert {case.patient_id: case.label for case in cohort.cases} == {"UCSF-PDGM-0004": 0}
    assert "both wildtype and mutant wording" in reasons(cohort)["UCSF-PDGM-0005"]


def test_diagnosis_column_is_never_read(tmp_path):
    write_patient(tmp_path, "UCSF-PDGM-0004")
    metadata = write_metadata(tmp_path, [("UCSF-PDGM-004", "wildtype")])
    metadata.write_text(metadata.read_text().replace("Glioblastoma, IDH-wildtype", "IDH-mutant (contradiction)"))
    cohort = ingest.discover_ucsf_pdgm(tmp_path, None, MODALITIES, bias_corrected=False)
    assert cohort.cases[0].label == 0


def test_bias_switch_picks_bias_corrected_files(tmp_path):
    write_patient(tmp_path, "UCSF-PDGM-0004", bias=True)
    write_metadata(tmp_path, [("UCSF-PDGM-004", "wildtype")])
    plain = ingest.discover_ucsf_pdgm(tmp_path, None, MODALITIES, bias_corrected=False).cases[0]
    biased = ingest.discover_ucsf_pdgm(tmp_path, None, MODALITIES, bias_corrected=True).cases[0]
    assert plain.images["T1"].name == "UCSF-PDGM-0004_T1.nii.gz"
    assert biased.images["T1"].name == "UCSF-PDGM-0004_T1_bias.nii.gz"


def test_newest_metadata_version_wins(tmp_path):
    write_patient(tmp_path, "UCSF-PDGM-0004")
    write_metadata(tmp_path, [("UCSF-PDGM-004", "wildtype")], name="UCSF-PDGM-metadata_v2.csv")
    write_metadata(tmp_path, [("UCSF-PDGM-004", "IDH1 p.R132H")], name="UCSF-PDGM-metadata_v5.csv")
    assert ingest.discover_ucsf_pdgm(tmp_path, None, MODALITIES, False).cases[0].label == 1


def test_bad_inputs_quarantine_only_the_affected_patient(tmp_path):
    write_patient(tmp_path, "UCSF-PDGM-0004")
    write_patient(tmp_path, "UCSF-PDGM-0010", skip=("T2",))
    folder = write_patient(tmp_path, "UCSF-PDGM-0011")
    write_volume(folder / "UCSF-PDGM-0011_T1.nii.gz", np.ones((8, 8, 8, 3), np.float32))
    folder = write_patient(tmp_path, "UCSF-PDGM-0012")
    write_volume(folder / "UCSF-PDGM-0012_T2.nii.gz", np.ones((8, 8, 9), np.float32))
    folder = write_patient(tmp_path, "UCSF-PDGM-0013")
    shifted = np.eye(4)
    shifted[0, 3] = 5.0
    write_volume(folder / "UCSF-PDGM-0013_FLAIR.nii.gz", np.ones((8, 8, 8), np.float32), shifted)
    folder = write_patient(tmp_path, "UCSF-PDGM-0014")
    (folder / "UCSF-PDGM-0014_T1.nii.gz").write_bytes(gzip.compress(b"not a nifti")[:12])
    write_metadata(tmp_path, [(f"UCSF-PDGM-{n:03d}", "wildtype") for n in (4, 10, 11, 12, 13, 14)]
                   + [("UCSF-PDGM-004", "wildtype")] * 0 + [("UCSF-PDGM-015", "wildtype"), ("UCSF-PDGM-015", "IDH1 p.R132H")])
    cohort = ingest.discover_ucsf_pdgm(tmp_path, None, MODALITIES, False)
    why = reasons(cohort)
    assert [c.patient_id for c in cohort.cases] == ["UCSF-PDGM-0004"]
    assert "missing T2" in why["UCSF-PDGM-0010"] and "UCSF-PDGM-0010_nifti" in why["UCSF-PDGM-0010"]
    assert "not a 3-D volume" in why["UCSF-PDGM-0011"] and "UCSF-PDGM-0011_T1.nii.gz" in why["UCSF-PDGM-0011"]
    assert "shape" in why["UCSF-PDGM-0012"] and "UCSF-PDGM-0012_T2.nii.gz" in why["UCSF-PDGM-0012"]
    assert "affine" in why["UCSF-PDGM-0013"]
    assert "unreadable" in why["UCSF-PDGM-0014"] and "UCSF-PDGM-0014_T1.nii.gz" in why["UCSF-PDGM-0014"]
    assert "duplicate patient id" in why["UCSF-PDGM-0015"]


def test_generic_csv_layout(tmp_path):
    images = {m: write_volume(tmp_path / "imgs" / f"p1_{m}.nii.gz", np.ones((8, 8, 8), np.float32)) for m in MODALITIES}
    rows = ["patient_id,label,flair,t1,t1c,t2,tumor_mask,brain_mask",
            "p1,1," + ",".join(f"imgs/p1_{m}.nii.gz" for m in MODALITIES) + ",,",
            "p2,wildtype," + ",".join(f"imgs/missing_{m}.nii.gz" for m in MODALITIES) + ",,",
            "../evil,0," + ",".join(f"imgs/p1_{m}.nii.gz" for m in MODALITIES) + ",,",
            "p3,," + ",".join(f"imgs/p1_{m}.nii.gz" for m in MODALITIES) + ",,"]
    (tmp_path / "cases.csv").write_text("\n".join(rows) + "\n")
    cohort = ingest.discover_csv(tmp_path / "cases.csv", MODALITIES)
    assert [(c.patient_id, c.label) for c in cohort.cases] == [("p1", 1)]
    assert cohort.cases[0].images["T2"] == images["T2"].resolve()
    why = reasons(cohort)
    assert "missing image file" in why["p2"]
    assert "unsafe patient id" in why["../evil"]
    assert "unlabeled" in why["p3"]


def test_manifest_round_trip(tmp_path):
    write_patient(tmp_path, "UCSF-PDGM-0004")
    write_metadata(tmp_path, [("UCSF-PDGM-004", "IDH1 p.R132H")])
    cases = ingest.discover_ucsf_pdgm(tmp_path, None, MODALITIES, False).cases
    ingest.write_manifest(cases, tmp_path / "cohort" / "manifest.csv", MODALITIES)
    assert ingest.read_manifest(tmp_path / "cohort" / "manifest.csv", MODALITIES) == cases
