"""Where a phantom cohort's signal is lost: learning from few patients, or measuring from the images.

For a job's work dir on a phantom cohort, scores the same non-test patients, on the job's own
folds, with a ladder of models, each fitted on the fold's training patients (out-of-fold AUC):

1. the Bayes-optimal score (``oracle.csv``), the ceiling;
2. a logistic regression on the drawn phenotype itself (``phenotypes.json``): what learning the
   weights from this many patients costs when every feature is measured perfectly;
3. a logistic regression on compartment radiomics of the job's own shards (volumes, intensity
   statistics per tumour compartment and modality, edge gradients, surface/volume, high-pass
   texture; the tumour mask is used): what a hand-made measurement recovers from the shards;
4. the shipped classical baseline (24 intensity statistics in the tumour);
5. the network (``reports/cv/oof_predictions.csv``), when the cv stage ran.

It also prints how well the radiomics recover each drawn feature (cross-validated R^2 of a
ridge regression), which says which features the preprocessed cube still shows, and, with
``--train-sizes``, the classical scorers' learning curve: the same folds with each fold's training
patients subsampled (mean over ``--repeats`` draws), which says whether more patients would close
the gap to the oracle or the measurement would still bound it.

    python benchmarks/signal_ceiling.py --work /tmp/learning/work-s11 --cohort /tmp/learning/cohort-s11
    python benchmarks/signal_ceiling.py --work W --cohort C --train-sizes 50 100 200
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
from scipy import ndimage
from sklearn.linear_model import LogisticRegression, RidgeCV
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from idhhpc.constants import EDEMA, ENHANCING, NECROSIS
from idhhpc.data.dataset import ShardDataset
from idhhpc.evaluate import baseline
from idhhpc.workdir import WorkDir


def radiomics(image: np.ndarray, tumour: np.ndarray) -> list[float]:
    """Compartment volumes and ratios, per-compartment intensity statistics, edge sharpness,
    surface/volume and high-pass texture of one preprocessed case."""
    whole, core = tumour > 0, np.isin(tumour, (NECROSIS, ENHANCING))
    compartments = (tumour == EDEMA, tumour == NECROSIS, tumour == ENHANCING, core)
    out = [np.log1p(whole.sum()), np.log1p(core.sum()), np.cbrt((whole.sum() + 1) / (core.sum() + 1)),
           (tumour == ENHANCING).sum() / (core.sum() + 1)]
    for region in compartments:
        for channel in image:
            values = channel[region] if region.any() else np.zeros(1)
            out += [values.mean(), values.std(), *np.percentile(values, (10, 90))]
    edges = [m ^ ndimage.binary_erosion(m) for m in (whole, core)]
    for channel in image:
        gradient = np.sqrt(sum(g**2 for g in np.gradient(ndimage.gaussian_filter(channel, 0.5))))
        high_pass = channel - ndimage.gaussian_filter(channel, 1.5)
        out += [gradient[e].mean() if e.any() else 0.0 for e in edges]
        out += [high_pass[r].std() if r.any() else 0.0 for r in (core, tumour == EDEMA)]
    out += [e.sum() / (m.sum() + 1) ** (2 / 3) for e, m in zip(edges, (whole, core))]
    return out


def phenotype_vector(phenotype: dict) -> list[float]:
    """The drawn features as numbers: yes/no as 0/1, the enhancement pattern one-hot, undrawn 0."""
    out = []
    for name in sorted(phenotype):
        value = phenotype[name]
        if isinstance(value, str):
            out += [float(value == level) for level in ("patchy", "ring")]
        else:
            out.append(float(value or 0.0))
    return out


def out_of_fold(features: dict[str, np.ndarray], labels: dict[str, int], folds: list[dict], c: float) -> dict[str, float]:
    probs = {}
    for fold in folds:
        model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=5000, class_weight="balanced"))
        model.fit(np.stack([features[p] for p in fold["train"]]), [labels[p] for p in fold["train"]])
        probs |= dict(zip(fold["val"], model.predict_proba(np.stack([features[p] for p in fold["val"]]))[:, 1]))
    return probs


def fold_aucs(scores: dict[str, float], labels: dict[str, int], folds: list[dict]) -> list[float]:
    """AUC on each fold's own validation patients: a pooled figure hides a fold that never learned."""
    return [roc_auc_score([labels[p] for p in fold["val"]], [scores[p] for p in fold["val"]]) for fold in folds]


def subsampled(folds: list[dict], size: int, seed: int) -> list[dict]:
    """The same folds with ``size`` training patients each (all of them when a fold has fewer)."""
    rng = np.random.default_rng(seed)
    return [{"train": list(rng.permutation(fold["train"])[:size]), "val": fold["val"]} for fold in folds]


def learning_curve(scorers: dict, labels: dict[str, int], folds: list[dict], ids: list[str], sizes: list[int],
                   repeats: int, c: float) -> None:
    """Print the out-of-fold AUC of each classical scorer against the training patients per fold."""
    y = [labels[p] for p in ids]
    print("\n| training patients per fold | " + " | ".join(scorers) + " |\n| --- |" + " --- |" * len(scorers))
    for size in sizes:
        cells = []
        for fit in scorers.values():
            aucs = [roc_auc_score(y, [probs[p] for p in ids]) for probs in
                    (fit(subsampled(folds, size, seed)) for seed in range(repeats))]
            cells.append(f"{np.mean(aucs):.3f}")
        print(f"| {min(size, min(len(f['train']) for f in folds))} | " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="the job's work dir (shards, splits.json)")
    parser.add_argument("--cohort", type=Path, required=True, help="the phantom cohort (oracle.csv, phenotypes.json)")
    parser.add_argument("--c", type=float, default=0.3, help="inverse L2 strength of the logistic regressions")
    parser.add_argument("--train-sizes", type=int, nargs="*", default=[],
                        help="also print the classical scorers' out-of-fold AUC with this many training patients per fold")
    parser.add_argument("--repeats", type=int, default=5, help="subsampling draws per training size")
    args = parser.parse_args()
    work = WorkDir(args.work)
    splits = json.loads(work.splits.read_text())
    labels, folds = splits["labels"], splits["folds"]
    ids = sorted(p for fold in folds for p in fold["val"])
    y = [labels[p] for p in ids]
    dataset = ShardDataset(work.index, ids, with_masks=True)
    modalities = len(dataset.index["modalities"])
    measured = {}
    for i, pid in enumerate(ids):
        item = dataset[i]
        measured[pid] = np.nan_to_num(np.array(radiomics(item["image"].numpy()[:modalities], item["tumor"].numpy())))
    rows = []
    with open(args.cohort / "oracle.csv", newline="") as fh:
        oracle = {r["patient_id"]: float(r["llr"]) for r in csv.DictReader(fh)}
    rows.append(("Bayes-optimal score (oracle.csv)", [oracle[p] for p in ids]))
    drawn = {}
    if (args.cohort / "phenotypes.json").is_file():
        patients = json.loads((args.cohort / "phenotypes.json").read_text())["patients"]
        drawn = {p: np.array(phenotype_vector(patients[p]["phenotype"])) for p in ids}
        probs = out_of_fold(drawn, labels, folds, args.c)
        rows.append(("logistic regression on the drawn phenotype (perfect measurement)", [probs[p] for p in ids]))
    probs = out_of_fold(measured, labels, folds, args.c)
    rows.append((f"logistic regression on {len(measured[ids[0]])} compartment radiomics (tumour mask)", [probs[p] for p in ids]))
    features = dict(zip(ids, baseline.tumour_features(work.index, ids)))
    probs = baseline.out_of_fold_probabilities(features, labels, folds)
    rows.append(("the shipped classical baseline (24 statistics in the tumour)", [probs[p] for p in ids]))
    if work.oof_predictions.is_file():
        with open(work.oof_predictions, newline="") as fh:
            network = {r["patient_id"]: float(r["prob_mutant"]) for r in csv.DictReader(fh)}
        rows.append(("the network (reports/cv/oof_predictions.csv)", [network[p] for p in ids]))
    print(f"{len(ids)} out-of-fold patients, {sum(y)} mutant, {len(folds)} folds\n")
    print("| scorer | out-of-fold AUC | per fold | worst fold |\n| --- | --- | --- | --- |")
    for name, scores in rows:
        per_fold = fold_aucs(dict(zip(ids, scores)), labels, folds)
        print(f"| {name} | {roc_auc_score(y, scores):.3f} | {' / '.join(f'{a:.3f}' for a in per_fold)} "
              f"| {min(per_fold):.3f} |")
    if drawn:
        print("\n| drawn feature | R^2 from the radiomics (5-fold ridge) |\n| --- | --- |")
        x = np.stack([measured[p] for p in ids])
        for name in sorted(patients[ids[0]]["phenotype"]):
            target = np.array([float(patients[p]["phenotype"][name] not in (None, False, "none")) if isinstance(
                patients[p]["phenotype"][name], (bool, str)) else float(patients[p]["phenotype"][name] or 0) for p in ids])
            ridge = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-2, 3, 12)))
            predicted = cross_val_predict(ridge, x, target, cv=5)
            print(f"| {name} | {1 - ((predicted - target) ** 2).sum() / ((target - target.mean()) ** 2).sum():.2f} |")
    if args.train_sizes:
        scorers = {"radiomics": lambda f: out_of_fold(measured, labels, f, args.c),
                   "baseline": lambda f: baseline.out_of_fold_probabilities(features, labels, f)}
        if drawn:
            scorers = {"drawn phenotype": lambda f: out_of_fold(drawn, labels, f, args.c)} | scorers
        learning_curve(scorers, labels, folds, ids, args.train_sizes, args.repeats, args.c)


if __name__ == "__main__":
    main()
