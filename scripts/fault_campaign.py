#!/usr/bin/env python
"""The fault campaign: disturb launches of the tiny job for real, relaunch, compare with an undisturbed run.

    python scripts/fault_campaign.py --out docs/fault-matrix.md                 # local cases only
    sudo bash slurm/private-cluster.sh start                                    # a cluster of one's own
    python scripts/fault_campaign.py --slurm private --out docs/fault-matrix.md # + node DOWN, slurmctld restart

Every case starts from the outputs an undisturbed run (the reference, same seed, same threads)
left before the stage under test, injects one fault while that stage runs, then relaunches the
same command and requires: the relaunch completes, its test metrics, predictions and every
exported model equal the reference's bit for bit, no partly written file is left or used, and
the launcher's or job's message names the cause. One row per case: case, stage, outcome, the
cause as reported, seconds until every process of the launch was gone (for signals), and
seconds to recover (the relaunch's wall time until the whole pipeline is done).

Local cases (``--cases``, comma-separated groups): ``lock``, a second launch on a work dir a live
launch holds, and one whose holder was killed; ``signals``, kill -9 of the stage's job, kill -9
of the launcher and SIGTERM of the launcher, for every stage (local executor; the relaunch uses
--relaunch-executor, debug by default, in this process; a case also fails when any process the
launch started, Ray's daemons included, outlives it by 30 s); ``mlflow``, the MLflow server down for
a whole launch; ``corrupt``, a corrupted shard and a corrupted checkpoint; ``disk``, the work
dir's file system full during preprocessing and during checkpointing (a small tmpfs, root only).

Slurm cases (``--slurm private``: the cluster of slurm/private-cluster.sh; ``--slurm shared``:
the shared test cluster, refused while anyone else has jobs there): the node taken DOWN while
fit trains (Slurm requeues the job, the chain goes on), slurmctld restarted while cv runs,
``scancel --signal=KILL`` of the running fit job and SIGKILL of its task's process (the relaunch
resumes it). These need root.

``--set KEY=VALUE`` applies to every launch, the reference's included: the tiny job has random
weights, so ``features`` has no task unless ``--set model.pretrained=FILE`` (a 2D state dict,
tests/support/pretrained.py) gives it a frozen pretrained prefix; ``tune`` runs only in a job
whose ``stages`` list it.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from idhhpc.launch import main  # noqa: E402
from tests.support import faults as F  # noqa: E402

STEPS = ("cohort", "preprocess", "preprocess-merge", "split", "features", "tune", "cv", "cv-summary", "fit",
         "evaluate", "explain")
OUTPUTS = {"cohort": ["cohort"], "preprocess": ["shards"], "preprocess-merge": ["shards/index.json"],
           "split": ["splits.json"], "features": ["features"], "tune": ["tune", "best_config.yaml"],
           "cv": ["checkpoints/fold-0", "checkpoints/fold-1"],
           "cv-summary": ["reports/cv"], "fit": ["checkpoints/fit"],
           "evaluate": ["reports"], "explain": ["reports/explain"]}
"""What each step writes: a case for step S starts from the reference minus S's and later outputs."""
BOOKKEEPING = ("launches", "mlflow.db", "mlartifacts", "tracking-spool", ".idhhpc.lock")
RUNNING = {"preprocess": r"preprocessing patients", "cv": r"trainer: epoch 1/4", "fit": r"trainer: epoch 1/4"}
"""The log line that shows a step is under way (training: its first epoch is done)."""
READY = {"tune": "tune/sweep/*/checkpoint_*"}
"""Files in the work dir that show a step has state to resume from (the sweep: a trial's first checkpoint)."""
CHAIN_FAILURE = re.compile(r"^(FAILED|CANCELLED) .*$", re.M)
"""The lines ``--wait`` ends with, one per job that did not complete: the first names the cause
unless a ``cause:`` line (a killed task, a full disk) says more."""
CAUSE = re.compile(r"^(cause: .*|error: stage .*|interrupted by .*|.*took over the lock of .*|"
                   r".*MLflow tracking server unreachable.*|.*do not verify: .*)$", re.M)


@dataclass
class Row:
    case: str
    stage: str
    outcome: str
    cause: str
    stopped_s: float | None
    recover_s: float | None


class Campaign:
    def __init__(self, root: Path, relaunch_executor: str, overrides: tuple[str, ...] = ()) -> None:
        self.root, self.relaunch_executor = root, relaunch_executor
        self.overrides = overrides
        """``--set`` overrides of every launch, the reference's included (e.g. pretrained weights, so
        that ``features`` has a task)."""
        self.reference = root / "reference" / "work"
        self.cohort = root / "reference" / "cohort"
        self.rows: list[Row] = []

    # --- shared steps ------------------------------------------------------------------------
    def run_main(self, work: Path, *extra: str, executor: str = "debug") -> tuple[int, str]:
        """``python -m idhhpc.launch`` in this process; its status and everything it printed or logged."""
        out = io.StringIO()
        handler = _capture_logs(out)
        wait = ["--wait"] if executor == "slurm-wait" else []
        executor = executor.removesuffix("-wait")
        try:
            with F.torch_threads(), contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
                code = main([*self.argv(work, *extra, executor=executor), *wait])
        finally:
            _release_logs(handler)
        return code, out.getvalue()

    def argv(self, work: Path, *extra: str, executor: str = "debug") -> list[str]:
        """Arguments of ``python -m idhhpc.launch`` for the fault job in ``work``, with the campaign's overrides."""
        return F.launch_argv(work, self.cohort, *self.overrides, *extra, executor=executor)

    def build_reference(self) -> None:
        if (self.reference / "reports" / "explain").is_dir():
            return
        code, text = self.run_main(self.reference)
        if code != 0:
            raise SystemExit(f"the undisturbed reference run failed:\n{text[-3000:]}")

    def prefix(self, case: str, step: str) -> Path:
        """A work dir holding the reference's outputs of every step before ``step``."""
        work = self.root / case / step / "work"
        shutil.rmtree(work.parent, ignore_errors=True)
        later = [path for s in STEPS[STEPS.index(step):] for path in OUTPUTS[s]]
        skip = set(BOOKKEEPING) | set(later)

        def ignore(directory: str, names: list[str]) -> set[str]:
            rel = Path(directory).relative_to(self.reference)
            return {n for n in names if str(rel / n).removeprefix("./") in skip}

        shutil.copytree(self.reference, work, ignore=ignore)
        return work

    def recover(self, work: Path, case: str, stage: str, cause: str, stopped_s: float | None, *extra: str,
                executor: str | None = None, stray: list[str] = ()) -> None:
        """Relaunch and check; ``stray``: processes of the disturbed launch still alive after it (a failure)."""
        started = time.monotonic()
        code, text = self.run_main(work, *extra, executor=executor or self.relaunch_executor)
        seconds = time.monotonic() - started
        problems = [f"processes left: {', '.join(stray)}"] if stray else []
        problems += [] if code == 0 else [f"relaunch exited {code}: {_last_cause(text)}"]
        if code == 0:
            problems += [f"differs: {d}" for d in F.result_differences(work, self.reference)]
            problems += [f"partial file left: {p.name}" for p in F.partial_files(work)]
        outcome = "recovered, results equal" if not problems else "; ".join(problems)
        self.rows.append(Row(case, stage, outcome, cause, stopped_s, round(seconds, 1)))
        print(f"[{case} / {stage}] {outcome} (cause: {cause}; recovered in {seconds:.0f} s)", flush=True)


def _capture_logs(stream: io.StringIO) -> logging.Handler:
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    logging.getLogger("idhhpc").setLevel(logging.INFO)
    return handler


def _release_logs(handler: logging.Handler) -> None:
    logging.getLogger().removeHandler(handler)


def _last_cause(text: str) -> str:
    found = CAUSE.findall(text)
    return found[-1].strip()[:300] if found else (text.strip().splitlines() or ["(no message)"])[-1][:300]


# --- local cases: signals to jobs and launchers, per stage --------------------------------------

def wait_for_step(work: Path, step: str, launcher: subprocess.Popen, timeout_s: float = 900) -> int | None:
    """The process group of ``step``'s job once its task runs (a training job: once its first epoch
    is logged), or None if the launcher ended first. Short steps are hit while their task starts."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and launcher.poll() is None:
        groups = [g for g, s in F.lock_groups(work).items() if s == step and F.task_pids(g)]
        logged = step not in RUNNING or any(re.search(RUNNING[step], p.read_text(errors="replace"))
                                            for p in F.job_logs(work))
        ready = step not in READY or any(work.glob(READY[step]))
        if groups and logged and ready:
            return groups[-1]
        time.sleep(0.05)
    return None


def signal_case(campaign: Campaign, case: str, step: str) -> None:
    """``kill-job``: SIGKILL the step's task; ``kill-launcher``: SIGKILL the launcher;
    ``sigterm-launcher``: SIGTERM the launcher. Then relaunch."""
    work = campaign.prefix(case, step)
    log = work.parent / "launcher.log"
    launcher = F.start_launcher(campaign.argv(work, executor="local"), log)
    group = wait_for_step(work, step, launcher)
    if group is None:
        launcher.kill()
        campaign.rows.append(Row(case, step, "not injected: the launch ended before a task of the step ran (a step "
                                 "without tasks, such as features without a frozen pretrained prefix, starts no job)",
                                 "", None, None))
        return
    groups, started = list(F.lock_groups(work)), time.monotonic()
    if case == "kill-job":
        for pid in F.task_pids(group):
            os.kill(pid, signal.SIGKILL)
    else:
        launcher.send_signal(signal.SIGKILL if case == "kill-launcher" else signal.SIGTERM)
    try:
        launcher.wait(timeout=600)
    except subprocess.TimeoutExpired:
        launcher.kill()
    left = F.wait_until_gone(groups, timeout_s=120)
    stray = F.wait_until_no_launch_processes(launcher.pid, timeout_s=30)
    stopped = round(time.monotonic() - started, 1)
    text = log.read_text(errors="replace")
    cause = _last_cause(text) if case != "kill-launcher" else f"launcher killed; {len(left)} job process group(s) left"
    campaign.recover(work, case, step, cause, stopped, stray=stray)
    for line in stray:  # not to disturb the next case
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(line.split()[0]), signal.SIGKILL)


# --- local cases: MLflow down, full file system, corrupt files ------------------------------------

def mlflow_down(campaign: Campaign) -> None:
    from tests.support.mlflow_server import free_port

    work = campaign.prefix("mlflow-down", "cohort")
    campaign.recover(work, "mlflow-down", "all", "MLflow tracking server unreachable (port with no server)", None,
                     f"tracking.uri=http://127.0.0.1:{free_port()}")


def full_disk(campaign: Campaign, step: str) -> None:
    """The work dir on a small tmpfs filled to the last bytes: nearly nothing left before
    preprocessing, room for one more last.pt but not two before training."""
    case, base = "full-disk", campaign.root / "full-disk" / step
    shutil.rmtree(base, ignore_errors=True)
    last = (campaign.reference / "checkpoints" / "fold-0" / "last.pt").stat().st_size
    store = f"tracking.uri=sqlite:///{base / 'mlflow.db'}"
    base.mkdir(parents=True)
    with F.Tmpfs(base / "fs", size_mb=(8 * last >> 20) + 64) as fs:
        work = fs.mountpoint / "work"
        shutil.copytree(campaign.prefix("full-disk-source", step), work)
        fs.fill(leave_bytes=256 << 10 if step == "preprocess" else int(1.6 * last))
        code, text = campaign.run_main(work, store, executor="local")
        cause = _last_cause(text) if code != 0 else "(the launch did not fail)"
        leftovers = [p.name for p in F.partial_files(work)]
        fs.unfill()
        campaign.recover(work, case, step, cause + (f"; temp files left: {leftovers}" if leftovers else ""), None,
                         store)


def corrupt(campaign: Campaign, what: str) -> None:
    """A flipped byte in a shard (rebuilt on relaunch) or a truncated last.pt (named; the
    relaunch after deleting it, as the message says, completes)."""
    work = campaign.root / "corrupt" / what / "work"
    shutil.rmtree(work.parent, ignore_errors=True)
    shutil.copytree(campaign.reference, work, ignore=shutil.ignore_patterns(*BOOKKEEPING))
    if what == "shard":
        F.flip_byte(work / "shards" / "shard-00001.h5")
        campaign.recover(work, "corrupt-shard", "preprocess", "relaunch log: outputs do not verify (sha256)", None)
        return
    F.truncate_half(work / "checkpoints" / "fit" / "last.pt")
    code, text = campaign.run_main(work)
    cause = _last_cause(text)
    (work / "checkpoints" / "fit" / "last.pt").unlink(missing_ok=True)
    campaign.recover(work, "corrupt-checkpoint", "fit", cause, None)


def second_launch(campaign: Campaign) -> None:
    """A launch on a work dir another (live) launch holds, then on one whose holder was killed."""
    work = campaign.prefix("second-launch", "cohort")
    hold = ("import sys, time; from idhhpc.hpc.lock import WorkDirLock; WorkDirLock(sys.argv[1]).acquire(); "
            "print('held', flush=True); time.sleep(600)")
    holder = subprocess.Popen([sys.executable, "-c", hold, str(work)], stdout=subprocess.PIPE, text=True,
                              env=F.launcher_env())
    holder.stdout.readline()
    started = time.monotonic()
    refused = subprocess.run([sys.executable, "-m", "idhhpc.launch", *campaign.argv(work)],
                             capture_output=True, text=True, env=F.launcher_env(), cwd=REPO)
    seconds = round(time.monotonic() - started, 1)
    holder.kill()
    holder.wait()
    first = refused.stderr.strip().splitlines()[0] if refused.stderr.strip() else ""
    outcome = f"refused, status {refused.returncode}" if refused.returncode == 3 else f"NOT refused ({refused.returncode})"
    campaign.rows.append(Row("second launch, holder alive", "-", outcome, first, seconds, None))
    campaign.recover(work, "second launch, holder killed", "all", "stale lock taken over (see the relaunch log)",
                     None)


# --- Slurm cases ------------------------------------------------------------------------------------

def slurm_config_value(key: str) -> str:
    out = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, check=True).stdout
    return next(line.split("=", 1)[1].strip() for line in out.splitlines() if line.split("=")[0].strip() == key)


def job_of(step: str, work: Path) -> str | None:
    """The Slurm job id of ``step`` in the chain the work dir's lock names (from its job folder)."""
    for out in F.job_logs(work):
        if re.search(rf"idhhpc\.job: {re.escape(step)}: started", out.read_text(errors="replace")):
            return out.parent.name
    return None


def task_pid(step: str, work: Path) -> int:
    """The pid of ``step``'s running task, from the line its job logs when it starts."""
    for out in F.job_logs(work):
        text = out.read_text(errors="replace")
        found = re.findall(rf"idhhpc\.job: {re.escape(step)}: started on \S+ \(pid (\d+)", text)
        if found:
            return int(found[-1])
    raise RuntimeError(f"no job log of {step} names its pid")


def slurm_case(campaign: Campaign, case: str, step: str, partition: str) -> None:
    """Submit the chain (``--wait``), inject the fault while ``step`` runs, let Slurm carry on, and
    require the chain to complete with the reference's results; a killed job is relaunched."""
    work = campaign.prefix(f"slurm-{case}", step)
    log = work.parent / "launcher.log"
    argv = [*campaign.argv(work, executor="slurm"), "--partition", partition, "--wait"]
    launcher = F.start_launcher(argv, log)
    F.wait_for_job_line(work, RUNNING.get(step, rf"idhhpc\.job: {re.escape(step)}: started"), timeout_s=900,
                        process=launcher)
    started, job = time.monotonic(), job_of(step, work)
    node = subprocess.run(["squeue", "-h", "-j", job, "-o", "%N"], capture_output=True, text=True).stdout.strip()
    if case == "node-down":
        subprocess.run(["scontrol", "update", f"nodename={node}", "state=down", "reason=fault-campaign"], check=True)
        time.sleep(2)
        subprocess.run(["scontrol", "update", f"nodename={node}", "state=resume"], capture_output=True)
    elif case == "slurmctld-restart":
        pid = int(Path(slurm_config_value("SlurmctldPidFile")).read_text())
        os.kill(pid, signal.SIGTERM)
        while Path(f"/proc/{pid}").exists():
            time.sleep(0.1)
        time.sleep(10)
        subprocess.run(["slurmctld"], check=True)
    elif case == "kill-task":  # SIGKILL to the task's process itself, past Slurm (as the OOM killer would)
        os.kill(task_pid(step, work), signal.SIGKILL)
    else:  # kill -9 of the running job through Slurm: slurmctld carries it out as a cancel (SIGTERM first)
        subprocess.run(["scancel", "--signal=KILL", "--full", job], check=True)
    code = launcher.wait(timeout=1800)
    text = log.read_text(errors="replace")
    first = re.search(r"^cause: .*$", text, re.M) or CHAIN_FAILURE.search(text)
    cause = (first.group(0) if first else _last_cause(text)) if code else f"job {job} on {node}: chain carried on"
    if code != 0:  # the relaunch goes to Slurm too, and waits for the chain
        campaign.recover(work, f"slurm-{case}", step, cause, None, f"hpc.resources.partition={partition}",
                         executor="slurm-wait")
        return
    problems = [f"differs: {d}" for d in F.result_differences(work, campaign.reference)]
    outcome = "chain completed, results equal" if not problems else "; ".join(problems)
    campaign.rows.append(Row(f"slurm-{case}", step, outcome, cause, None, round(time.monotonic() - started, 1)))
    print(f"[slurm-{case} / {step}] {outcome} ({time.monotonic() - started:.0f} s)", flush=True)


def use_cluster(which: str) -> None:
    """Point Slurm's clients at the private cluster, or make sure nobody else uses the shared one."""
    if which == "private":
        conf = subprocess.run(["bash", str(REPO / "slurm" / "private-cluster.sh"), "conf"], capture_output=True,
                              text=True, check=True).stdout.strip()
        os.environ["SLURM_CONF"] = conf
    others = subprocess.run(["squeue", "-h", "-o", "%i %j"], capture_output=True, text=True, check=True).stdout
    if which == "shared" and others.strip():
        raise SystemExit(f"the shared test cluster is in use (squeue: {others.strip()[:200]}); "
                         "node DOWN and slurmctld restarts would break those jobs: use --slurm private")


# --- the matrix ------------------------------------------------------------------------------------

def markdown(rows: list[Row], command: str) -> str:
    lines = [f"Produced by `{command}` on {time.strftime('%Y-%m-%d %H:%M')} ({os.cpu_count()} CPUs, load "
             f"{os.getloadavg()[0]:.1f}).", "",
             "| case | stage | outcome | cause as reported | s until no process | s to recover |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        cause = r.cause.replace("|", "\\|").replace("\n", " ")[:220]
        lines.append(f"| {r.case} | {r.stage} | {r.outcome} | {cause} | {_num(r.stopped_s)} | {_num(r.recover_s)} |")
    return "\n".join(lines) + "\n"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


SLURM_CASES = (("node-down", "fit"), ("slurmctld-restart", "cv"), ("kill-job", "fit"), ("kill-task", "fit"))
"""``kill-job``: ``scancel --signal=KILL`` (slurmctld carries it out as a cancel: SIGTERM first);
``kill-task``: SIGKILL straight to the task's process on its node, as the OOM killer would."""
LOCAL_GROUPS = ("lock", "signals", "mlflow", "corrupt", "disk")


def run(args: argparse.Namespace) -> list[Row]:
    campaign = Campaign(args.root, args.relaunch_executor, tuple(args.set))
    campaign.build_reference()
    groups = {group for group in args.cases.split(",") if group}
    if "lock" in groups:
        second_launch(campaign)
    for step in (args.stages.split(",") if args.stages else STEPS) if "signals" in groups else ():
        for case in ("kill-job", "kill-launcher", "sigterm-launcher"):
            signal_case(campaign, case, step)
    if "mlflow" in groups:
        mlflow_down(campaign)
    if "corrupt" in groups:
        corrupt(campaign, "shard")
        corrupt(campaign, "checkpoint")
    if "disk" in groups and F.running_as_root():
        full_disk(campaign, "preprocess")
        full_disk(campaign, "cv")
    if args.slurm != "none":
        use_cluster(args.slurm)
        for case, step in SLURM_CASES:
            slurm_case(campaign, case, step, args.partition)
    return campaign.rows


def main_cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path("runs/fault-campaign"), help="scratch folder (reused)")
    parser.add_argument("--cases", default=",".join(LOCAL_GROUPS),
                        help=f"local groups to run, comma-separated from {','.join(LOCAL_GROUPS)} ('' for none)")
    parser.add_argument("--stages", help="comma-separated subset of the stages for the per-stage signal cases")
    parser.add_argument("--slurm", choices=["none", "private", "shared"], default="none")
    parser.add_argument("--partition", default="debug")
    parser.add_argument("--relaunch-executor", choices=["debug", "local"], default="debug")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a config override for every launch of the campaign, the reference's included "
                             "(repeatable; e.g. model.pretrained=FILE so that features has a task)")
    parser.add_argument("--out", type=Path, help="write the markdown matrix here (and FILE.json)")
    args = parser.parse_args(argv)
    args.root = args.root.resolve()
    os.environ.setdefault("OMP_NUM_THREADS", str(F.THREADS))
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger().handlers[0].setLevel(logging.WARNING)  # the console; each case captures INFO itself
    rows = run(args)
    text = markdown(rows, "python scripts/fault_campaign.py " + " ".join(argv if argv is not None else sys.argv[1:]))
    print(text)
    if args.out:
        args.out.write_text(text)
        args.out.with_suffix(".json").write_text(json.dumps([asdict(r) for r in rows], indent=1))
    return 0 if all(r.outcome.startswith(("recovered", "chain completed")) for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main_cli())
