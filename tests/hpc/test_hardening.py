"""What must be refused before anything runs, and what a failure message must say.

sbatch scripts take no newline or NUL from the job (an injected line would run as shell code and
silently drop every #SBATCH line after it); task layouts that cannot work are refused with the
key to change; the MLflow server is not exposed by accident; requeued Slurm jobs are not final.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from idhhpc.config import ConfigError, load_job
from idhhpc.hpc.chain import _cancel_phrase, _is_final
from idhhpc.hpc.failures import describe_failure
from idhhpc.hpc.jobcall import CheckpointableStageCall, StageCall, stage_call, summarize
from idhhpc.hpc.sacct import sacct_rows
from idhhpc.launch import main
from idhhpc.stages.cv import run_cv_fold
from idhhpc.stages.split import run_split
from tests.support.jobs import tiny_config

REPO = Path(__file__).resolve().parents[2]


def job_file(tmp_path: Path, hpc: str) -> Path:
    path = tmp_path / "job.yaml"
    path.write_text(f"data: {{root: {tmp_path / 'cohort'}}}\nwork_dir: {tmp_path / 'work'}\nhpc: {hpc}\n")
    return path


@pytest.mark.parametrize("hpc, key", [
    ('{resources: {extra_sbatch: {"comment=x\\ntouch /tmp/INJECTED\\n#": y}}}', "extra_sbatch key"),
    ('{resources: {extra_sbatch: {comment: "x\\ntouch /tmp/INJECTED #"}}}', "extra_sbatch.comment"),
    ('{resources: {setup: ["module load cuda\\ntouch /tmp/INJECTED"]}}', "setup[0]"),
    ('{resources: {partition: "gpu\\u0000x"}}', "hpc.resources.partition"),
    ('{stages: {fit: {account: "a\\nb"}}}', "hpc.stages.fit.account"),
    ('{resources: {extra_sbatch: {output: /tmp/x}}}', "set by idhhpc"),
])
def test_control_characters_and_reserved_options_never_reach_an_sbatch_script(tmp_path, capsys, hpc, key):
    assert main(["--job", str(job_file(tmp_path, hpc)), "--executor", "slurm", "--dry-run"]) == 2
    out, err = capsys.readouterr()
    assert key in err and "#SBATCH" not in out


def test_a_work_dir_with_a_newline_is_refused_before_a_script_is_written(tmp_path, capsys):
    job = tmp_path / "job.yaml"
    job.write_text(f'data: {{root: {tmp_path / "cohort"}}}\nwork_dir: "{tmp_path}/work\\ntouch INJECTED"\n')
    assert main(["--job", str(job), "--partition", "debug", "--dry-run"]) == 2
    out, err = capsys.readouterr()
    assert "work_dir" in err and "control characters" in err and "#SBATCH" not in out


@pytest.mark.parametrize("override, words", [
    ("hpc.stages.fit={gpus_per_node: 1, tasks_per_node: 2}", ["hpc.stages.fit", "tasks_per_node=1"]),
    ("hpc.stages.preprocess.tasks_per_node=2", ["hpc.stages.preprocess", "only cv and fit"]),
    ("hpc.stages.evaluate.nodes=2", ["hpc.stages.evaluate", "only cv and fit"]),
    ("hpc.stages.fit.nodes=2", ["hpc.stages.fit", "needs the slurm executor"]),
])
def test_task_layouts_that_cannot_work_are_refused_with_the_key(tmp_path, override, words):
    with pytest.raises(ConfigError) as err:
        load_job(None, [override])
    assert all(word in str(err.value) for word in words), str(err.value)


def test_ddp_with_several_tasks_needs_the_local_or_slurm_executor():
    with pytest.raises(ConfigError, match="debug runs one task"):
        load_job(None, ["hpc.executor=debug", "hpc.stages.fit.tasks_per_node=2"])
    assert load_job(None, ["hpc.executor=slurm", "hpc.stages.fit={nodes: 2, gpus_per_node: 4, tasks_per_node: 4}"])


def test_mlflow_server_on_a_network_address_needs_an_explicit_flag(tmp_path):
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "PYTHON": sys.executable}
    refused = subprocess.run([str(REPO / "mlflow" / "server.sh"), "--host", "0.0.0.0", "--store-dir",
                              str(tmp_path / "store")], env=env, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2
    assert "NO authentication" in refused.stderr and "--expose" in refused.stderr
    assert not (tmp_path / "store").exists()  # nothing started


def row(state: str, job_id: str = "7") -> dict[str, str]:
    return {"JobID": job_id, "State": state, "End": "2026-01-01T00:00:00", "Reason": "None", "Start": "x"}


def test_a_node_failure_or_preemption_that_slurm_requeues_is_not_the_end():
    for state in ("NODE_FAIL", "PREEMPTED"):
        assert not _is_final(row(state), "7", {"7": ("PENDING", "BeginTime")})
        assert _is_final(row(state), "7", {})  # no longer queued: it really ended so
    assert not _is_final(row("NODE_FAIL", "9_1"), "9_1", {"9_[0-1]": ("PENDING", "BeginTime")})
    assert _is_final(row("FAILED"), "7", {"7": ("PENDING", "BeginTime")})


def test_a_job_cancelled_while_running_is_named_with_who_cancelled_it_not_its_old_pending_reason(monkeypatch):
    """sacct keeps a started job's Reason from while it was pending (``Dependency``): quoting it
    said a dependency ended a job that scancel ended (``scancel --signal=KILL`` included)."""
    out = ("900014|CANCELLED by 0|Dependency|2026-12-01T13:39:43|2026-12-01T13:40:21\n"
           "900015|CANCELLED|Dependency|None|2026-12-01T13:40:22\n")
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 0, out, ""))
    ran, pending = sacct_rows(["900014", "900015"], ("JobID", "State", "Reason", "Start", "End"))
    assert ran["State"] == "CANCELLED" and ran["CancelledBy"] == "0" and "CancelledBy" not in pending
    message = _cancel_phrase(ran)
    assert message.startswith("cancelled while running by root (uid 0)") and "Dependency" not in message
    assert "run the same command again" in message
    assert _cancel_phrase(pending) == "never started: a stage it depends on failed (sacct reason Dependency)"

def test_a_checkpointable_step_stays_checkpointable_when_wrapped_for_its_job():
    wrapped = stage_call(run_cv_fold, "cv", 2)
    assert isinstance(wrapped, CheckpointableStageCall)
    resubmission = wrapped.checkpoint("config", 1)
    assert isinstance(resubmission.function, CheckpointableStageCall)
    assert resubmission.function.function is run_cv_fold and resubmission.args == ("config", 1)
    plain = stage_call(run_split, "split", 1)
    assert type(plain) is StageCall and not hasattr(plain, "checkpoint")


def test_a_requeued_training_job_still_records_its_stamp():
    """Slurm requeues a preempted fold through ``checkpoint``: the resubmitted job must still
    record the step's stamp when it succeeds, or the finished chain looks stale next launch."""
    resubmission = stage_call(run_cv_fold, "cv", 2, stamped=True).checkpoint("config", 1)
    assert resubmission.function.stamped and not stage_call(run_cv_fold, "cv", 2).checkpoint("config", 1).function.stamped


def test_a_steps_result_is_summarised_in_one_line():
    assert summarize({"auc": 0.8123456, "ids": list(range(50)), "run": "fit"}) == "auc=0.8123, ids=<50 items>, run=fit"


def test_failure_messages_name_a_full_disk_a_signal_and_an_unreadable_checkpoint(tmp_path):
    config = tiny_config(tmp_path / "work", tmp_path / "cohort")
    stderr = tmp_path / "job.err"
    stderr.write_text("HDF5-DIAG: ... errno = 28, error message = 'No space left on device'\n"
                      "idhhpc: task 0 of job 41 was ended by SIGSEGV (signal 11): a crash in native code\n")
    message = describe_failure("preprocess", "41_0", None, config, stderr)
    assert "cause: task 0 of job 41 was ended by SIGSEGV" in message
    assert f"cause: the file system of {config.work_dir} is full or over quota" in message
    error = RuntimeError("cannot read checkpoint /w/checkpoints/fit/last.pt: PytorchStreamReader failed")
    message = describe_failure("fit", "42", error, config, None)
    assert "checkpoint /w/checkpoints/fit/last.pt cannot be read (truncated or corrupt). Delete it" in message


def test_a_slurm_task_ended_by_a_signal_is_named_from_sruns_line(tmp_path):
    """On Slurm no controller of ours writes the signal line: srun's ``task 0: Killed`` is the
    only trace of a SIGKILL from outside Slurm (the OOM killer, kill -9 on the node)."""
    config = tiny_config(tmp_path / "work", tmp_path / "cohort")
    stderr = tmp_path / "job.err"
    stderr.write_text("srun: error: fnode: task 0: Killed\nsrun: Force Terminated StepId=900044.0\n")
    message = describe_failure("fit", "900044", None, config, stderr)
    assert "cause: task 0 of job 900044 on fnode was ended by SIGKILL (signal 9): killed by hand on the node" in message
    stderr.write_text("srun: error: n1: tasks 0-1: Segmentation fault\n")
    assert "cause: tasks 0-1 of job 7 on n1 were ended by SIGSEGV (signal 11)" in describe_failure(
        "preprocess", "7", None, config, stderr)
    stderr.write_text("srun: error: fnode: task 0: Exited with exit code 75\n")
    assert "cause:" not in describe_failure("fit", "8", None, config, stderr)

def test_local_jobs_get_their_cpus_per_task_as_threads(tmp_path):
    """Whatever the launcher's environment says: parallel local jobs must not oversubscribe the cores."""
    from idhhpc.hpc.runner import run_locally
    from idhhpc.stages.step import Step
    from tests.support.faults import report_threads

    config = tiny_config(tmp_path / "work", tmp_path / "cohort", "hpc.resources.cpus_per_task=3")
    [record] = run_locally([Step("probe", "cohort", report_threads)], config, "local", tmp_path / "jobs",
                           progress=False)
    assert record.results == [(3, "3")]
    assert "probe: started on" in Path(record.logs[0]).read_text()
