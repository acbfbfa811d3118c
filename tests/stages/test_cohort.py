"""The cohort stage: phantom generation on demand, manifest and quarantine, the minimum-size guard."""

from __future__ import annotations

import csv

import pytest

from idhhpc.config import load_job
from idhhpc.hpc.freshness import fresh
from idhhpc.stages.cohort import (
    PHANTOM_SPEC_FILE,
    STEPS,
    TooFewPatients,
    outputs_verify,
    run_cohort,
)
from tests.support.pipeline import run_in_process


def job(tmp_path, *overrides):
    return load_job(None, [f"work_dir={tmp_path / 'work'}", f"data.root={tmp_path / 'cohort'}",
                           "data.phantom.patients=20", "data.phantom.shape=[24,24,16]", "data.min_patients=4",
                           *overrides])


def test_generates_phantoms_once_and_writes_manifest_and_quarantine(tmp_path):
    summary = run_cohort(job(tmp_path))
    assert summary.included == 20 and summary.mutant >= 1 and summary.wildtype >= 1
    rows = list(csv.DictReader(open(tmp_path / "work" / "cohort" / "manifest.csv")))
    assert len(rows) == 20 and all(row["flair"].endswith("_FLAIR.nii.gz") for row in rows)
    quarantined = list(csv.DictReader(open(tmp_path / "work" / "cohort" / "quarantine.csv")))
    assert quarantined and all(row["reason"] for row in quarantined)
    stamp = (tmp_path / "cohort" / "UCSF-PDGM-metadata_v2.csv").stat().st_mtime_ns
    run_cohort(job(tmp_path))
    assert (tmp_path / "cohort" / "UCSF-PDGM-metadata_v2.csv").stat().st_mtime_ns == stamp


def test_changed_phantom_spec_regenerates(tmp_path):
    run_cohort(job(tmp_path))
    assert run_cohort(job(tmp_path, "data.phantom.patients=21")).included == 21


def test_a_cohort_from_an_older_generator_does_not_verify_and_is_regenerated(tmp_path):
    config = job(tmp_path)
    run_cohort(config)
    assert outputs_verify(config)
    marker = tmp_path / "cohort" / PHANTOM_SPEC_FILE
    marker.write_text(marker.read_text().replace('"generator": ', '"generator": -'))  # as an older version wrote it
    (tmp_path / "cohort" / "oracle.csv").unlink()
    assert not outputs_verify(config)  # a relaunch reruns the stage ...
    run_cohort(config)
    assert (tmp_path / "cohort" / "oracle.csv").is_file() and outputs_verify(config)  # ... which redraws it


def test_a_changed_header_cap_reruns_the_step(tmp_path):
    """The step quarantines by ``preprocess.max_voxels``: raising it must recheck the headers."""
    config = job(tmp_path)
    run_in_process(config, ["cohort"])
    assert outputs_verify(config) and fresh(STEPS[0], config)
    assert not fresh(STEPS[0], job(tmp_path, f"preprocess.max_voxels={config.preprocess.max_voxels * 2}"))


def test_refuses_to_overwrite_real_data_with_phantoms(tmp_path):
    (tmp_path / "cohort").mkdir()
    (tmp_path / "cohort" / "precious.txt").write_text("real data")
    with pytest.raises(FileExistsError, match="holds other data"):
        run_cohort(job(tmp_path))


def test_too_few_patients_fails_with_the_summary(tmp_path):
    with pytest.raises(TooFewPatients, match="only 20 usable patients"):
        run_cohort(job(tmp_path, "data.min_patients=30"))


def test_real_dataset_at_root_is_used_instead_of_phantoms(tmp_path):
    from tests.support.ucsf_layout import write_metadata, write_patient

    for number in range(4, 10):
        write_patient(tmp_path / "cohort", f"UCSF-PDGM-{number:04d}")
    write_metadata(tmp_path / "cohort", [(f"UCSF-PDGM-{n:03d}", "wildtype" if n % 2 else "IDH1 p.R132H") for n in range(4, 10)])
    summary = run_cohort(job(tmp_path))
    assert summary.included == 6
    assert not (tmp_path / "cohort" / "phantom-spec.json").exists()
