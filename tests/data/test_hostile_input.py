"""Crafted hostile files (``tests/support/hostile_nifti.py``) through the cohort and preprocess
steps, in a fresh process whose peak memory is theirs: each patient is quarantined with its
reason, in bounded memory, and the good patients of the same shard are stored."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.hostile_nifti import CASES, GOOD, case_patients, write_hostile_cohort

GIB_IN_MIB = 1024
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def hostile_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("hostile") / "UCSF-PDGM"
    write_hostile_cohort(root)
    return root


def fresh_process(*args: str) -> dict:
    """``python -m tests.support.hostile_nifti ARGS`` in its own process: its JSON report."""
    done = subprocess.run([sys.executable, "-m", "tests.support.hostile_nifti", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])


def test_every_crafted_file_is_quarantined_with_its_reason_in_bounded_memory(hostile_root, tmp_path):
    report = fresh_process("cohort", str(hostile_root), str(tmp_path / "work"))
    patients = case_patients()
    for name, (_, _, reason) in CASES.items():
        measured = report["cases"][name]
        assert reason in measured["outcome"], (name, measured["outcome"])
        assert reason in report["quarantine"][patients[name]], name
        assert "\n" not in report["quarantine"][patients[name]]
        assert measured["traced_peak_mib"] < GIB_IN_MIB, (name, measured)
    assert report["stored"] == sorted(GOOD), "the good patients of the shard are kept"
    assert set(report["quarantine"]) == set(patients.values())
    assert report["max_rss_delta_mib"] < GIB_IN_MIB, report["max_rss_delta_mib"]
