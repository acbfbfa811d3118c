"""The whole pipeline on the real Slurm test cluster: arrays, afterok chains, failures, preemption.

One tiny phantom job (16 patients, 48x48x32, size 32, B0, 1 epoch, 2 folds) runs end to end
through the launcher once per module; the other tests reuse its cohort and shards.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import torch

from idhhpc.hpc.chain import job_states, wait_for_chain
from idhhpc.hpc.pipeline import build_steps
from idhhpc.hpc.runner import run_locally, submit_to_slurm
from idhhpc.launch import main
from tests.support.jobs import tiny_config, tiny_overrides
from tests.support.slurm import (
    sacct_records,
    slurm_marks,
    wait_for_final_state,
)

pytestmark = slurm_marks(300, pytest.mark.slow)


def launch(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def as_set_args(overrides: list[str]) -> list[str]:
    return [arg for override in overrides for arg in ("--set", override)]


@pytest.fixture(scope="module")
def chain(tmp_path_factory) -> dict:
    """``python -m idhhpc.launch --partition debug --wait`` on the tiny job, cohort → explain."""
    root = tmp_path_factory.mktemp("slurm-chain")
    work, cohort = root / "work", root / "cohort"
    code, out, err = launch("--partition", "debug", "--wait", "-q", *as_set_args(tiny_overrides(work, cohort)))
    print(out, err)
    return {"code": code, "out": out, "err": err, "work": work, "cohort": cohort}


def table_rows(out: str) -> dict[str, list[str]]:
    """The launcher's last table: step → [state, jobs, ...]."""
    last = out[out.rindex("step "):]
    return {line.split()[0]: line.split()[1:] for line in last.splitlines()[1:] if line.split() and
            not line.startswith(("work dir", "MLflow", "report", "compare"))}


def test_full_chain_runs_to_report_and_gallery(chain) -> None:
    assert chain["code"] == 0, chain["err"]
    work = chain["work"]
    assert (work / "reports" / "report.md").is_file()
    assert (work / "reports" / "explain" / "gallery.md").is_file()
    rows = table_rows(chain["out"])
    assert list(rows) == ["cohort", "preprocess", "preprocess-merge", "split", "features", "cv",
                          "cv-summary", "fit", "evaluate", "explain", "finish"]
    assert {row[0] for row in rows.values()} == {"COMPLETED"}
    assert "this launch:" in chain["out"]  # the link to the launch (parent) run
    cv_job = rows["cv"][1]
    assert [r["State"] for r in sacct_records(cv_job.split("_")[0])] == ["COMPLETED", "COMPLETED"]
    assert not (work / ".idhhpc.lock").exists()  # the finish job gave the work dir back


def test_the_chains_jobs_record_their_stamps_so_the_next_plan_skips_every_step(chain) -> None:
    """The Slurm jobs record their own stamps (no launcher waits for them to)."""
    from idhhpc.hpc.freshness import plan_skips

    assert chain["code"] == 0, chain["err"]
    config = tiny_config(chain["work"], chain["cohort"])
    steps = build_steps(list(config.stages))
    assert len(list((chain["work"] / "stamps" / "cv").glob("*.json"))) == config.split.folds
    assert plan_skips(steps, config) == {step.name for step in steps}


def test_every_job_log_says_what_it_did_and_training_logs_every_epoch(chain) -> None:
    logs = {path: path.read_text() for path in (chain["work"] / "launches").glob("*/*/*_log.out")}
    assert logs and all(re.search(r"idhhpc\.job: \S+: started on .* done in", text, re.S) for text in logs.values())
    training = [text for text in logs.values() if re.search(r"idhhpc\.job: (cv|fit): started", text)]
    assert len(training) == 3  # two folds and the fit
    for text in training:
        assert len(re.findall(r"trainer: epoch \d+/1: train loss .* val auc .* val loss .* lr .* s \(train .*"
                              r"samples/s.*\), peak memory", text)) == 1
    shards = [text for text in logs.values() if "preprocessing patients" in text]
    assert len(shards) == 3 and all(re.search(r"patients done \d+/16", text) for text in shards)


def test_preprocess_array_yields_the_same_shards_as_a_local_run(chain, tmp_path) -> None:
    local = tiny_config(tmp_path / "work", chain["cohort"])
    run_locally(build_steps(["cohort", "preprocess"]), local, "debug", tmp_path / "jobs", progress=False)
    on_slurm = json.loads((chain["work"] / "shards" / "index.json").read_text())
    here = json.loads((tmp_path / "work" / "shards" / "index.json").read_text())
    assert len(on_slurm["shards"]) == 3
    assert here["patients"] == on_slurm["patients"]
    assert here["shards"] == on_slurm["shards"]  # shard name → sha256


def test_failing_stage_cancels_its_dependents_and_is_reported(chain, tmp_path) -> None:
    """split fails (no shard index in a fresh work dir); the cv array and fit must be cancelled."""
    overrides = tiny_overrides(tmp_path / "work", chain["cohort"])
    code, out, err = launch("--partition", "debug", "--wait", "-q", "--stages", "split,cv,fit", *as_set_args(overrides))
    assert code == 1
    assert "FAILED stage split failed" in err and "index.json" in err
    assert "CANCELLED cv" in err and "CANCELLED fit" in err
    rows = table_rows(out)
    assert rows["split"][0] == "FAILED"
    assert rows["cv"][0] == rows["fit"][0] == "CANCELLED"
    assert wait_for_final_state(rows["split"][1]) == "FAILED"
    split_end = sacct_records(rows["split"][1])[0]["End"]
    for step in ("cv", "fit"):
        base = rows[step][1].split("_")[0]
        records = job_states([base])
        print(f"sacct {step} {base}: {records}")
        assert {r["State"] for r in records.values()} == {"CANCELLED"}
        # never ran: no allocation; Slurm leaves Start unset or stamps it with the cancellation time
        assert all(r["Start"] in ("None", "Unknown", r["End"]) or not r.get("AllocTRES") for r in records.values()), records
        assert all(r["End"] >= split_end for r in records.values())  # cancelled when split failed
    assert "never started: a stage it depends on failed" in err


def _fit_copy(chain: dict, dest: Path):
    """A work dir holding the chain's cohort, shards and split but no checkpoints."""
    for part in ("cohort", "shards"):
        shutil.copytree(chain["work"] / part, dest / part)
    shutil.copy2(chain["work"] / "splits.json", dest / "splits.json")
    train = "train={epochs: 3, micro_batch: 2, accumulate: 1, num_workers: 0, patience: 3, checkpoint_every_steps: 2}"
    return tiny_config(dest, chain["cohort"], train)


def _wait_for_file(path: Path, job, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if time.monotonic() > deadline or job.done():
            raise TimeoutError(f"{path} did not appear within {timeout_s} s (job {job.job_id}: {job.state})\n"
                               f"{job.stderr() or ''}")
        time.sleep(0.1)


def test_usr2_mid_fit_requeues_and_resumes_bitwise(chain, tmp_path) -> None:
    preempted, reference = _fit_copy(chain, tmp_path / "preempted"), _fit_copy(chain, tmp_path / "reference")
    steps = build_steps(["fit"])
    records_p, jobs_p = submit_to_slurm(steps, preempted, tmp_path / "jobs-p")
    records_r, _ = submit_to_slurm(steps, reference, tmp_path / "jobs-r")
    last = tmp_path / "preempted" / "checkpoints" / "fit" / "last.pt"
    _wait_for_file(last, jobs_p[0], timeout_s=180)  # after 2 of ~15 optimizer steps
    job_id = jobs_p[0].job_id
    subprocess.run(["scancel", "--signal=USR2", job_id], check=True)
    outcome = wait_for_chain(records_p + records_r, preempted, timeout_s=240)
    assert outcome.ok, outcome.report()
    wait_for_final_state(job_id)
    history = [r["State"] for r in sacct_records(job_id, with_requeues=True)]
    print(f"sacct state history of preempted fit {job_id}: {history}")
    assert history == ["REQUEUED", "COMPLETED"]
    fits = [tmp_path / name / "checkpoints" / "fit" for name in ("preempted", "reference")]
    for name in ("model.pt", "best.pt"):
        a, b = (torch.load(d / name, weights_only=True)["model"] for d in fits)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    a, b = (json.loads((d / "selection.json").read_text()) for d in fits)
    assert a["history"] == b["history"] and len(a["history"]) == 3
    assert a["val"] == b["val"]
