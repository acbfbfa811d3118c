"""The leakage guard finds training patients planted in an external cohort, and no one else."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from idhhpc.config import PreprocessConfig
from idhhpc.constants import LEAKAGE_THRESHOLD, MODALITIES
from idhhpc.data import leakage
from idhhpc.data.cohort import discover_ucsf_pdgm
from idhhpc.data.egd import discover_egd
from idhhpc.data.harmonise import PERCENTILES, landmarks, reference_region, standardise
from idhhpc.data.preprocess import settings_hash
from idhhpc.data.shards import build_shard, merge_index
from idhhpc.phantoms import generate_cohort
from idhhpc.phantoms.sites import generate_site_cohort, plant_duplicates

SETTINGS = PreprocessConfig(size=32, roi="tumor")


def _index(cases, folder):
    build_shard(0, cases, folder, SETTINGS, list(MODALITIES))
    merge_index(folder, 1, settings_hash(SETTINGS, list(MODALITIES)))
    return folder / "index.json"


@pytest.fixture(scope="module")
def cohorts(tmp_path_factory):
    """12 site-A patients preprocessed as training shards; 10 distinct site-B patients plus 3
    site-A patients re-saved (other format, dtype, voxel order, voxel size, intensity scale)."""
    root = tmp_path_factory.mktemp("leakage")
    site_a, site_b = root / "A", root / "B"
    generate_cohort(site_a, 12, seed=5, shape=(48, 48, 32), n_followups=0, n_unknown=0, progress=False)
    generate_site_cohort(site_b, 10, "B", seed=5, shape=(48, 48, 32), n_unknown=0, progress=False)
    with open(site_a / "oracle.csv", newline="") as handle:
        ids = [row["patient_id"] for row in csv.DictReader(handle)]
    planted = plant_duplicates(site_a, site_b, ids[:3])
    training = discover_ucsf_pdgm(site_a, None, list(MODALITIES), False).cases
    external = discover_egd(site_b, list(MODALITIES)).cases
    assert len(external) == 13
    return {"planted": planted, "training": _index(training, root / "train"),
            "external": _index(external, root / "external"), "site_a": site_a}


def test_the_guard_finds_every_planted_duplicate_and_flags_no_distinct_patient(cohorts):
    screening = leakage.screen(cohorts["training"], cohorts["external"], len(MODALITIES), LEAKAGE_THRESHOLD)
    found = {pid: match for pid, match, _ in screening.duplicates}
    assert found == cohorts["planted"]
    assert len(screening.kept) == 10 and screening.compared_with == 12
    assert screening.closest_kept < LEAKAGE_THRESHOLD
    reasons = dict(screening.quarantine_rows())
    planted_id, source = next(iter(cohorts["planted"].items()))
    assert f"duplicate of internal patient {source}" in reasons[planted_id]


def test_brats_ids_in_the_training_metadata_name_duplicates(cohorts, tmp_path):
    metadata = next(cohorts["site_a"].glob("UCSF-PDGM-metadata*.csv"))
    with open(metadata, newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["BraTS21 ID"]]
    training = {f"UCSF-PDGM-{int(rows[0]['ID'].rsplit('-', 1)[1]):04d}"}
    aliases = leakage.brats_aliases(metadata, training)
    assert set(aliases.values()) == training
    brats = next(iter(aliases))
    cases = tmp_path / "cases.csv"
    cases.write_text(f"patient_id,label,brats21_id\nTCGA-02-0006,1,{brats}\nTCGA-02-0009,0,\n")
    found = leakage.named_duplicates(["TCGA-02-0006", "TCGA-02-0009", brats], aliases,
                                     leakage.external_brats_ids(cases))
    assert found == {"TCGA-02-0006": next(iter(training)), brats: next(iter(training))}


def test_fingerprint_ignores_intensity_scale_and_offset():
    rng = np.random.default_rng(0)
    image, brain = rng.normal(size=(4, 16, 16, 16)), np.ones((16, 16, 16), np.uint8)
    a = leakage.fingerprint(image, brain, 4, side=4)
    b = leakage.fingerprint(3.0 * image + 7.0, brain, 4, side=4)
    assert np.allclose(a, b)


def test_histogram_standardisation_maps_landmarks_onto_the_standard():
    rng = np.random.default_rng(1)
    image = rng.gamma(2.0, 1.0, size=(2, 16, 16, 16)).astype(np.float32)
    brain, tumor = np.ones((16, 16, 16), np.uint8), np.zeros((16, 16, 16), np.uint8)
    tumor[:4] = 1
    standard = np.stack([np.linspace(-2, 2, len(PERCENTILES))] * 2)
    mapped = standardise(image, brain, tumor, standard)
    assert np.allclose(landmarks(mapped, reference_region(brain, tumor), 2), standard, atol=0.05)
    order = np.argsort(image[0].ravel())
    assert np.all(np.diff(mapped[0].ravel()[order]) >= -1e-6)  # monotone: the ranking is kept
