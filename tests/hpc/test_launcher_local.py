"""The launcher without Slurm: skipping verified stages, failure messages, and no-sbatch advice."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from idhhpc.config import JobConfig
from idhhpc.hpc.failures import describe_failure, is_gpu_out_of_memory
from idhhpc.hpc.freshness import plan_skips
from idhhpc.hpc.pipeline import build_steps, outputs_verify
from idhhpc.hpc.runner import SKIPPED, StageFailed, run_locally
from idhhpc.launch import main
from idhhpc.stages.preprocess import run_preprocess_shard as preprocess_shard
from idhhpc.stages.step import Step
from tests.support.jobs import tiny_config, tiny_overrides

ALL = ["cohort", "preprocess", "split", "features", "cv", "fit", "evaluate", "explain"]
OOM_WORDS = ("train.micro_batch", "train.accumulate", "model.activation_checkpointing")


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> tuple[Path, Path]:
    """The whole tiny pipeline, run in-process once; tests copy nothing and only read it."""
    root = tmp_path_factory.mktemp("launch")
    work, cohort = root / "work", root / "cohort"
    argv = ["--executor", "debug", "-q", *[a for o in tiny_overrides(work, cohort) for a in ("--set", o)]]
    assert main(argv) == 0
    return work, cohort


@pytest.mark.slow
def test_relaunch_skips_every_verified_stage(finished, capsys) -> None:
    work, cohort = finished
    argv = ["--executor", "debug", "-q", *[a for o in tiny_overrides(work, cohort) for a in ("--set", o)]]
    assert main(argv) == 0
    table = capsys.readouterr().out
    steps = len(build_steps(ALL))  # cohort, preprocess (+merge), split, features, cv (+summary), fit, evaluate, explain
    assert [line.split()[1] for line in table.splitlines()[1:steps + 1]] == [SKIPPED] * steps == [SKIPPED] * 10


@pytest.mark.slow
def test_changed_sections_rerun_the_steps_that_read_them(finished) -> None:
    work, cohort = finished
    config = tiny_config(work, cohort)
    steps = build_steps(ALL)
    assert plan_skips(steps, config) == {s.name for s in steps}
    changed = tiny_config(work, cohort, "split.folds=3")
    # Was {"cohort", "preprocess", "preprocess-merge"} under the rule "once one step reruns, every
    # later one does"; the feature cache reads no split key, so it now stays.
    assert plan_skips(steps, changed) == {"cohort", "preprocess", "preprocess-merge", "features"}
    more_epochs = tiny_config(work, cohort, "train.epochs=2")
    assert not outputs_verify("fit", more_epochs)
    explain = tiny_config(work, cohort, "explain.max_cases=1")
    assert plan_skips(steps, explain) == {s.name for s in steps} - {"explain"}


@pytest.mark.slow
def test_a_corrupt_shard_fails_verification(finished, tmp_path) -> None:
    import shutil

    work, cohort = finished
    copy = tmp_path / "work"
    shutil.copytree(work / "shards", copy / "shards")
    shutil.copytree(work / "cohort", copy / "cohort")
    config = tiny_config(copy, cohort)
    assert outputs_verify("preprocess", config)
    shard = sorted((copy / "shards").glob("shard-*.h5"))[0]
    data = bytearray(shard.read_bytes())
    data[-100] ^= 0xFF
    shard.write_bytes(bytes(data))
    os.utime(copy / "shards" / "index.json")
    assert not outputs_verify("preprocess", config)


def raise_gpu_oom(config, *args):
    raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


def test_gpu_out_of_memory_names_the_settings_to_change(tmp_path) -> None:
    config = tiny_config(tmp_path / "work", tmp_path / "cohort")
    step = Step("fit", "fit", raise_gpu_oom)
    with pytest.raises(StageFailed) as caught:
        run_locally([step], config, "debug", tmp_path / "jobs", progress=False)
    message = str(caught.value)
    assert "stage fit failed" in message and "CUDA out of memory" in message
    assert all(word in message for word in OOM_WORDS), message


def test_remote_out_of_memory_traceback_text_gets_the_hint(tmp_path) -> None:
    remote = RuntimeError("Job failed during processing with trace:\n"
                          "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 MiB")
    assert is_gpu_out_of_memory(remote)
    assert not is_gpu_out_of_memory(ValueError("shapes differ"))
    config = tiny_config(tmp_path / "work", tmp_path / "cohort")
    message = describe_failure("cv", "123_1", remote, config, None)
    assert all(word in message for word in OOM_WORDS)
    assert "--set train.micro_batch=1 --set train.accumulate=2" in message
    assert "error: torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 MiB" in message


def small_cohort_shard(tmp_path: Path) -> tuple[JobConfig, list[str]]:
    """A cohort of 8 small phantoms, and the patients planned for its first shard."""
    from idhhpc.stages.cohort import run_cohort
    from idhhpc.stages.preprocess import shard_plan

    config = tiny_config(tmp_path / "work", tmp_path / "cohort", "data.phantom.patients=8",
                         "data.phantom.shape=[24, 24, 16]", "data.min_patients=2")
    run_cohort(config)
    return config, [case.patient_id for case in shard_plan(config)[0]]


def fail_one_patient(monkeypatch, victim: str, error: BaseException) -> None:
    """The shard builder's per-patient preprocessing raises ``error`` for ``victim`` only."""
    from idhhpc.data import shards

    real = shards.preprocess_case

    def failing(case, settings):
        if case.patient_id == victim:
            raise error
        return real(case, settings)

    monkeypatch.setattr(shards, "preprocess_case", failing)


def test_one_patients_unexpected_error_quarantines_that_patient_only(tmp_path, monkeypatch) -> None:
    config, planned = small_cohort_shard(tmp_path)
    victim = planned[2]
    fail_one_patient(monkeypatch, victim, MemoryError("cannot allocate array"))
    report = preprocess_shard(config, 0)
    assert report.quarantined == [{"patient_id": victim, "reason": "unexpected MemoryError while preprocessing: "
                                                                   "cannot allocate array"}]
    assert report.n_written == len(planned) - 1


def test_a_stop_mid_shard_is_no_patients_rejection(tmp_path, monkeypatch) -> None:
    """The launcher's SIGTERM reaches a preprocessing job as StageInterrupted: the shard stops
    unwritten, it does not quarantine the patient being read and carry on."""
    from idhhpc.hpc.jobcall import StageInterrupted

    config, planned = small_cohort_shard(tmp_path)
    fail_one_patient(monkeypatch, planned[1], StageInterrupted("stopped by SIGTERM (the launch was interrupted)"))
    with pytest.raises(StageInterrupted):
        preprocess_shard(config, 0)
    assert not list((tmp_path / "work" / "shards").glob("shard-*"))


def test_a_failed_shard_names_its_patients(tmp_path, monkeypatch) -> None:
    from idhhpc.data import shards

    config, planned = small_cohort_shard(tmp_path)

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(shards, "write_shard", full_disk)
    with pytest.raises(OSError) as caught:
        preprocess_shard(config, 0)
    assert f"one of its patients {', '.join(planned)}" in "\n".join(caught.value.__notes__)
    message = describe_failure("preprocess", "9_0", caught.value, config, None)
    assert "preprocess shard 0 failed on one of its patients" in message


def test_no_sbatch_suggests_the_local_executor(tmp_path) -> None:
    bare = tmp_path / "bin"
    bare.mkdir()
    env = {**os.environ, "PATH": str(bare)}
    args = [a for o in tiny_overrides(tmp_path / "work", tmp_path / "cohort") for a in ("--set", o)]
    result = subprocess.run([sys.executable, "-m", "idhhpc.launch", "--partition", "debug", *args],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 2
    assert "sbatch is not on PATH" in result.stderr and "--executor local" in result.stderr
    assert not (tmp_path / "work").exists()  # failed before creating anything


def test_dry_run_prints_the_array_and_dependencies(tmp_path, capsys) -> None:
    args = [a for o in tiny_overrides(tmp_path / "work", tmp_path / "cohort") for a in ("--set", o)]
    assert main(["--partition", "debug", "--dry-run", *args]) == 0
    text = capsys.readouterr().out
    assert "#SBATCH --array=0-2%3" in text  # 16 phantom patients / shard_size 6
    assert "#SBATCH --dependency='afterok:<cohort>'" in text
    assert "#SBATCH --kill-on-invalid-dep=yes" in text
    assert "#SBATCH --partition=debug" in text
    assert not (tmp_path / "work").exists()


def test_guard_is_what_the_preprocess_step_runs() -> None:
    step = next(s for s in build_steps(["preprocess"]) if s.name == "preprocess")
    assert step.function is preprocess_shard
    assert step.after == ()


@pytest.mark.slow
def test_what_trained_is_what_config_and_mlflow_say_after_tuning_and_the_memory_plan(finished, tmp_path) -> None:
    """``trained_config.yaml`` beside the model, the fit run's MLflow params and the job inside
    ``model.pt`` agree, with tuned values and the memory plan applied; ``config.yaml`` stays the
    job as launched and differs from them only in the keys tuning and the plan set."""
    import shutil

    import yaml
    from mlflow.tracking import MlflowClient

    from idhhpc import api
    from idhhpc.tracking.flatten import flatten_params
    from idhhpc.tuned import write_best_config
    from idhhpc.workdir import WorkDir

    source, cohort = finished
    work = tmp_path / "work"
    shutil.copytree(source, work)
    config = tiny_config(work, cohort, "train.memory_budget_gb=50", "train.device=cpu")
    write_best_config(config, {"max_lr": 0.0005, "micro_batch": 1, "accumulate": 4})
    result = api.launch(config, stages=["fit"], executor="debug")
    assert [(r.step, r.state) for r in result.steps] == [("fit", "COMPLETED")]
    paths = WorkDir(work)
    trained = yaml.safe_load(paths.trained_config("fit").read_text())
    exported = json.loads(torch.load(paths.exported_model("fit"), weights_only=True)["config"])
    assert (trained["train"]["max_lr"], trained["train"]["micro_batch"], trained["train"]["accumulate"]) == (
        0.0005, 4, 1)  # tuned 1 x 4, then the memory plan's 4 x 1
    assert exported["train"] == trained["train"]
    client = MlflowClient(f"sqlite:///{work / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("idhhpc").experiment_id
    [run] = [r for r in client.search_runs([experiment]) if r.data.params.get("role") == "fit"
             and r.data.tags.get("mlflow.parentRunId") == result.context.parent_run_id]
    assert {k: run.data.params[k] for k in flatten_params(trained)} == flatten_params(trained)
    launched = yaml.safe_load(paths.resolved_config.read_text())
    differing = {k for k, v in flatten_params(launched).items() if flatten_params(trained).get(k) != v}
    assert differing == {"train.max_lr", "train.micro_batch"}  # launched as 2 x 1


STEP_NAMES = {step.name for step in build_steps(ALL)}
TRAINED = {"cv", "cv-summary", "fit", "evaluate", "explain"}
RERUNS = [  # one key of every section, and the steps a relaunch with it must rerun
    ("seed=1", STEP_NAMES),
    ("data.min_patients=7", STEP_NAMES),
    ("preprocess.margin=3", STEP_NAMES - {"cohort"}),
    ("preprocess.max_voxels=1000000", STEP_NAMES),  # the cohort step checks headers against it
    ("split.val_fraction=0.2", STEP_NAMES - {"cohort", "preprocess", "preprocess-merge", "features"}),
    ("model.dropout=0.3", TRAINED),  # the tiny job has no frozen pretrained prefix: features does nothing
    ("cache.views=4", set()),  # ... and no cache applies
    ("train.max_lr=0.002", TRAINED),
    ("train.augment=flips", TRAINED),
    ("evaluate.bootstrap=500", {"cv-summary", "evaluate"}),
    ("evaluate.threshold=youden", TRAINED),  # chosen on each run's validation patients
    ("evaluate.ensemble=fit", {"cv-summary", "evaluate", "explain"}),
    ("explain.max_cases=1", {"explain"}),
    ("tune.num_samples=2", set()),  # no tune step here and no best_config.yaml: nothing tuned is read
    ("tracking.experiment=other", set()),
    ("hpc.local_parallelism=1", set()),
    ("name=other", set()),
]
UNTABLED = {"work_dir", "stages", "external"}
"""Not a key of a step's inputs: where the outputs live, which steps run, and the external
stage's cohorts (its steps have no integrity check, so they always run)."""


def test_the_rerun_table_covers_every_config_section() -> None:
    assert {key.split("=")[0].split(".")[0] for key, _ in RERUNS} == set(JobConfig.model_fields) - UNTABLED


def declared_reruns(steps: list[Step], config: JobConfig, key: str) -> set[str]:
    """The steps declaring ``key`` (its section or the key itself; every step reads the seed) and
    every step downstream of them, read from the declarations alone."""
    from idhhpc.hpc.freshness import upstream

    readers = {s.name for s in steps
               if key == "seed" or any(key == r or key.startswith(r + ".") for r in s.read_keys(config))}
    return {s.name for s in steps if s.name in readers or upstream(s) & readers}


@pytest.mark.slow
@pytest.mark.parametrize("override,expected", RERUNS, ids=[key for key, _ in RERUNS])
def test_a_changed_key_reruns_exactly_its_readers_and_their_dependents(finished, override, expected) -> None:
    work, cohort = finished
    config = tiny_config(work, cohort, override)
    steps = build_steps(ALL)
    reruns = STEP_NAMES - plan_skips(steps, config)
    assert reruns == expected
    assert reruns == declared_reruns(steps, config, override.split("=")[0])


@pytest.mark.slow
def test_a_work_dir_without_stamps_reruns_every_step(finished, tmp_path) -> None:
    """Unknown provenance (a work dir of an older version, a hand-made one): nothing is skipped."""
    import shutil

    work, cohort = finished
    copy = tmp_path / "work"
    shutil.copytree(work, copy, ignore=shutil.ignore_patterns("stamps", "mlflow.db", "mlartifacts"))
    assert plan_skips(build_steps(ALL), tiny_config(copy, cohort)) == set()


@pytest.mark.slow
def test_a_new_bootstrap_rewrites_the_evaluation_and_leaves_shards_checkpoints_and_explanations(
        finished, tmp_path, capsys) -> None:
    import shutil

    from idhhpc.evaluate.report import GALLERY_LINK
    from idhhpc.workdir import WorkDir

    source, cohort = finished
    copy = tmp_path / "work"
    shutil.copytree(source, copy, ignore=shutil.ignore_patterns("mlflow.db", "mlartifacts"))
    work = WorkDir(copy)
    kept = {p: p.stat().st_mtime_ns for folder in (work.shards, work.root / "checkpoints", work.explanations)
            for p in folder.rglob("*") if p.is_file()}
    predictions, metrics = work.predictions.read_text(), work.metrics.read_text()
    report_written = work.report.stat().st_mtime_ns
    capsys.readouterr()
    argv = ["--executor", "debug", "-q",
            *[a for o in tiny_overrides(copy, cohort, "evaluate.bootstrap=500") for a in ("--set", o)]]
    assert main(argv) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[1:len(STEP_NAMES) + 1]]
    assert {row[0] for row in rows if row[1] != SKIPPED} == {"cv-summary", "evaluate"}
    assert work.report.stat().st_mtime_ns > report_written and GALLERY_LINK in work.report.read_text()
    assert work.predictions.read_text() == predictions and work.metrics.read_text() != metrics  # other intervals
    assert {p: p.stat().st_mtime_ns for p in kept} == kept
    relaunch = ["--executor", "debug", "-q",
                *[a for o in tiny_overrides(copy, cohort, "evaluate.bootstrap=500") for a in ("--set", o)]]
    assert main(relaunch) == 0  # the evaluate job recorded its new stamp: nothing reruns now
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[1:len(STEP_NAMES) + 1]]
    assert {row[0] for row in rows if row[1] != SKIPPED} == set()
