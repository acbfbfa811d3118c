"""How much of the learnable signal a job captures: out-of-fold AUC against the Bayes optimum.

For each generator seed, writes a phantom cohort in the UCSF-PDGM layout (UCSF-PDGM's mutant
share, every patient's Bayes-optimal score in ``oracle.csv``), runs the job on it exactly as a
user would (``python -m idhhpc.launch --set data.root=…``), and prints the pooled out-of-fold AUC
of the network beside the oracle's and the classical baseline's on the same patients, and the
test AUC beside the oracle's on the same test patients. The baseline measured in the same run is
the Bayes optimum itself (the ratio ``network / oracle``), with the classical model as the floor
the network must clear.

    python benchmarks/learning.py --out /tmp/learning --patients 180 --seeds 11 12
    python benchmarks/learning.py --out /tmp/learning64 --patients 180 --seeds 11 12 --job jobs/phantom_64.yaml

Goal (issue 9): out-of-fold AUC within 0.05 of the oracle for the default job, 0.03 for the
larger job; test AUC within 0.10.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from sklearn.metrics import roc_auc_score

from idhhpc.phantoms import generate_cohort

UCSF_PDGM_MUTANT_SHARE = 103 / 501


def make_cohort(root: Path, patients: int, seed: int, shape: tuple[int, int, int]) -> Path:
    cohort = root / f"cohort-s{seed}"
    if not (cohort / "UCSF-PDGM-metadata_v2.csv").is_file():
        generate_cohort(cohort, patients, seed=seed, shape=shape, crossover=0.0,
                        mutant_fraction=UCSF_PDGM_MUTANT_SHARE, progress=False)
    return cohort


def launch(cohort: Path, work: Path, job: str | None, overrides: list[str]) -> float:
    """Run the whole job on the cohort; return its wall time in seconds."""
    command = [sys.executable, "-m", "idhhpc.launch", "-q", "--set", f"data.root={cohort}",
               "--set", f"work_dir={work}", "--set", "data.phantom=null"]
    command += ["--job", job] if job else []
    for item in overrides:
        command += ["--set", item]
    start = time.perf_counter()
    subprocess.run(command, check=True, env=os.environ | {"PYTHONUNBUFFERED": "1"})
    return time.perf_counter() - start


def test_aucs(work: Path, cohort: Path) -> tuple[float, float]:
    """The network's test AUC and the oracle's on the same test patients."""
    with open(work / "reports" / "predictions.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    with open(cohort / "oracle.csv", newline="") as fh:
        oracle = {row["patient_id"]: float(row["llr"]) for row in csv.DictReader(fh)}
    labels = [int(row["label"]) for row in rows]
    network = roc_auc_score(labels, [float(row["prob_mutant"]) for row in rows])
    return network, roc_auc_score(labels, [oracle[row["patient_id"]] for row in rows])


def measure(args: argparse.Namespace, seed: int) -> dict:
    cohort = make_cohort(args.out, args.patients, seed, tuple(args.shape))
    work = args.out / f"work-s{seed}"
    seconds = launch(cohort, work, args.job, args.set)
    summary = json.loads((work / "reports" / "cv" / "summary.json").read_text())
    test, test_oracle = test_aucs(work, cohort)
    return {"seed": seed, "oof": summary["network"]["auc"], "oracle": summary["oracle"]["auc"],
            "baseline": summary["baseline"]["auc"], "test": test, "test_oracle": test_oracle,
            "folds": summary["per_fold_auc"], "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--patients", type=int, default=180)
    parser.add_argument("--seeds", type=int, nargs="+", default=[11, 12])
    parser.add_argument("--shape", type=int, nargs=3, default=[96, 96, 64])
    parser.add_argument("--job", default=None, help="job YAML (default: the built-in job)")
    parser.add_argument("--set", action="append", default=[], help="extra key=value overrides")
    args = parser.parse_args()
    print(f"{'seed':>4} {'OOF':>6} {'oracle':>6} {'gap':>6} {'OOF/oracle':>10} {'baseline':>8} "
          f"{'test':>6} {'oracle':>6} {'gap':>6} {'folds':>20} {'wall s':>7}")
    for seed in args.seeds:
        r = measure(args, seed)
        folds = "/".join(f"{a:.2f}" for a in r["folds"])
        print(f"{r['seed']:>4} {r['oof']:6.3f} {r['oracle']:6.3f} {r['oracle'] - r['oof']:6.3f} "
              f"{r['oof'] / r['oracle']:10.3f} {r['baseline']:8.3f} {r['test']:6.3f} {r['test_oracle']:6.3f} "
              f"{r['test_oracle'] - r['test']:6.3f} {folds:>20} {r['seconds']:7.0f}", flush=True)
        with open(args.out / "learning.jsonl", "a") as fh:
            fh.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
