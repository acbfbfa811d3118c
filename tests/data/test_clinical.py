"""Clinical covariates for the late fusion: read from the cohort's own table, refused when unusable."""

from __future__ import annotations

import numpy as np
import pytest

from idhhpc.config import load_job
from idhhpc.data.clinical import read_covariates

UCSF_HEADER = "ID,Sex,Age at MRI,WHO CNS Grade,IDH\n"


def _ucsf_job(tmp_path, rows: str):
    (tmp_path / "UCSF-PDGM-metadata_v2.csv").write_text(UCSF_HEADER + rows)
    return load_job(None, [f"work_dir={tmp_path / 'work'}", f"data.root={tmp_path}", "evaluate.clinical=[age]"])


def test_ages_come_from_the_metadata_csv_in_the_order_asked_for(tmp_path):
    job = _ucsf_job(tmp_path, "UCSF-PDGM-004,F,52,4,wildtype\nUCSF-PDGM-0005,M,38.5,2,mutant\n")
    ages = read_covariates(job, ["UCSF-PDGM-0005", "UCSF-PDGM-0004", "UCSF-PDGM-0004_FU016d"])
    assert ages.shape == (3, 1)
    assert ages[:, 0].tolist() == [38.5, 52.0, 52.0]  # 3-digit IDs in the CSV; a follow-up shares its patient's row


@pytest.mark.parametrize("cell, reason", [("", "empty"), ("n/a", "'n/a'"), ("520", "'520'"), ("nan", "'nan'")])
def test_an_unusable_age_is_refused_naming_the_file_the_line_and_the_patient(tmp_path, cell, reason):
    job = _ucsf_job(tmp_path, f"UCSF-PDGM-004,F,52,4,wildtype\nUCSF-PDGM-005,M,{cell},2,mutant\n")
    with pytest.raises(ValueError, match=r"UCSF-PDGM-metadata_v2.csv.*UCSF-PDGM-0005 \(line 3: " + reason) as err:
        read_covariates(job, ["UCSF-PDGM-0004", "UCSF-PDGM-0005"])
    assert "UCSF-PDGM-0004" not in str(err.value)


def test_a_patient_without_a_row_and_a_table_without_the_column_are_refused(tmp_path):
    job = _ucsf_job(tmp_path, "UCSF-PDGM-004,F,52,4,wildtype\n")
    with pytest.raises(ValueError, match=r"UCSF-PDGM-0009 \(no row\)"):
        read_covariates(job, ["UCSF-PDGM-0004", "UCSF-PDGM-0009"])
    (tmp_path / "UCSF-PDGM-metadata_v2.csv").write_text("ID,Sex,IDH\nUCSF-PDGM-004,F,wildtype\n")
    with pytest.raises(ValueError, match="no column 'Age at MRI' / 'age' / 'Age'"):
        read_covariates(job, ["UCSF-PDGM-0004"])


def test_a_users_cases_csv_gives_its_age_column(tmp_path):
    (tmp_path / "cases.csv").write_text("patient_id,label,age,flair,t1,t1c,t2\np1,0,61,a,b,c,d\np2,1,33,a,b,c,d\n")
    job = load_job(None, [f"work_dir={tmp_path / 'work'}", "data.layout=csv", f"data.cases_csv={tmp_path / 'cases.csv'}",
                          "evaluate.clinical=[age]"])
    assert np.array_equal(read_covariates(job, ["p2", "p1"]), [[33.0], [61.0]])
