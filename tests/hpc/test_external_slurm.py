"""The external step on the real Slurm test cluster: a trained launch scores a site-B cohort with
a preprocessing array, then the scoring job, chained like every other step."""

from __future__ import annotations

import csv
import contextlib
import io
import json

import pytest

from idhhpc.launch import main
from idhhpc.phantoms.cli import main as phantoms_main
from tests.support.jobs import tiny_overrides
from tests.support.slurm import sacct_records, slurm_marks

pytestmark = slurm_marks(300, pytest.mark.slow)


def _launch(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def _sets(overrides: list[str]) -> list[str]:
    return [arg for override in overrides for arg in ("--set", override)]


def test_external_step_runs_as_a_slurm_chain(tmp_path) -> None:
    work, cohort, site_b = tmp_path / "work", tmp_path / "cohort", tmp_path / "siteB"
    overrides = tiny_overrides(work, cohort)
    assert main(["--executor", "debug", "-q", "--stages", "cohort,preprocess,split,fit,evaluate", *_sets(overrides)]) == 0
    assert phantoms_main([str(site_b), "--site", "B", "--patients", "8", "--seed", "2", "--shape", "48", "48", "32",
                          "--plant-duplicates-from", str(cohort), "--duplicates", "1"]) == 0
    external = f"external=[{{name: siteb, layout: egd, root: {site_b}}}]"
    code, out, err = _launch("--partition", "debug", "--wait", "-q", "--stages", "external", *_sets(overrides),
                             "--set", external)
    print(out, err)
    assert code == 0, err
    last = out[out.rindex("step "):]
    rows = {line.split()[0]: line.split()[1:] for line in last.splitlines()[1:] if line.split()
            and not line.startswith(("work dir", "MLflow", "report", "compare", " "))}
    assert [name for name in rows if name.startswith(("external", "finish"))] == [
        "external", "external-preprocess", "external-score", "finish"]
    array = rows["external-preprocess"][1].split("_")[0]
    assert [r["State"] for r in sacct_records(array)] == ["COMPLETED", "COMPLETED"]  # 9 subjects, shards of 6
    reports = work / "external" / "siteb" / "reports"
    assert json.loads((reports / "external.json").read_text())["duplicates"] == 1
    with open(reports / "predictions.csv", newline="") as handle:
        statuses = [row["status"] for row in csv.DictReader(handle)]
    assert statuses.count("scored") == 8 and statuses.count("quarantined") == 1
