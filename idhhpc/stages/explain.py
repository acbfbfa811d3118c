"""Stage ``explain``: Grad-CAM for held-out test patients, in model and native space, plus a gallery.

The tumor segmentation is used here and only here, to measure whether the model looks at
the tumor (CAM energy in the tumor, pointing game, against their chance levels).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Iterator

from idhhpc.config import JobConfig
from idhhpc.data.dataset import ShardDataset, read_case
from idhhpc.data.geometry import output_affine, to_native
from idhhpc.data.splits import load_splits
from idhhpc.devices import resolve_device
from idhhpc.evaluate.report import link_gallery
from idhhpc.explain.explainer import explain_cases
from idhhpc.predictor import Predictor
from idhhpc.stages.checks import newer
from idhhpc.stages.step import Step
from idhhpc.tracking.records import log_explanation
from idhhpc.tracking.runs import stage_run
from idhhpc.workdir import FIT_RUN, WorkDir, fold_run_name

def explained_model(work: WorkDir) -> Path:
    """Grad-CAM explains one network: the final fit, or the first fold model without one."""
    fit = work.exported_model(FIT_RUN)
    return fit if fit.is_file() else work.exported_model(fold_run_name(0))


def run_explain(config: JobConfig) -> dict[str, float]:
    work = WorkDir(config.work_dir)
    splits = load_splits(config)
    patients = choose_patients(splits["test"], splits["labels"], config.explain.max_cases)
    with stage_run(config, "explain", patients={"test": patients}) as run:
        predictor = Predictor.load(explained_model(work), resolve_device(config.train.device))
        result = explain_cases(predictor.model, iter_cases(work, patients, _evaluated_probs(work)), work.explanations,
                               predictor.threshold, config.explain.layer, methods=tuple(config.explain.methods),
                               to_native=lambda cam, case: to_native(cam, case["geometry"]))
        link_gallery(work.report)
        log_explanation(run, config, result, [work.patient_report(case["patient_id"]) for case in result["cases"]])
    return result["summary"]


def choose_patients(test_ids: list[str], labels: dict[str, int], max_cases: int | None) -> list[str]:
    """All test patients, or ``max_cases`` of them alternating between classes so both are shown."""
    if max_cases is None or max_cases >= len(test_ids):
        return list(test_ids)
    by_class = [[p for p in test_ids if labels[p] == c] for c in (1, 0)]
    chosen: list[str] = []
    while len(chosen) < max_cases and any(by_class):
        for group in by_class:
            if group and len(chosen) < max_cases:
                chosen.append(group.pop(0))
    return chosen


def iter_cases(work: WorkDir, patients: list[str], probs: dict[str, float]) -> Iterator[dict[str, Any]]:
    dataset = ShardDataset(work.index, patients, with_masks=True)
    for position, patient_id in enumerate(patients):
        item = dataset[position]
        geometry = read_case(work.index, patient_id).geometry
        yield {**item, "label": item["label"] if item["label"] >= 0 else None, "prob": probs.get(patient_id),
               "tumor": item["tumor"].numpy(), "brain": item["brain"].numpy(),
               "geometry": geometry, "affine": output_affine(geometry)}


def _evaluated_probs(work: WorkDir) -> dict[str, float]:
    if not work.predictions.is_file():
        return {}
    with open(work.predictions) as fh:
        return {row["patient_id"]: float(row["prob_mutant"]) for row in csv.DictReader(fh)}


def outputs_verify(config: JobConfig) -> bool:
    """The gallery is newer than the model it explains. Not compared with ``predictions.csv``'s
    age: an evaluate step that reruns for a key explain does not read (bootstrap) rewrites the same
    predictions, and the keys that change them are explain's own (``evaluate.ensemble``)."""
    work = WorkDir(config.work_dir)
    return newer(work.gallery, explained_model(work))


def explain_outputs(config: JobConfig) -> list[Path]:
    return [WorkDir(config.work_dir).gallery]


STEPS = (Step("explain", "explain", run_explain, outputs_verify=outputs_verify, outputs=explain_outputs,
              # The explained network (the fit, else fold 0) and the headline probability each case
              # shows, which ``evaluate.ensemble`` picks; evaluate's other keys (bootstrap, clinical)
              # leave both alone, so explain does not need the evaluate step.
              reads=("explain", "evaluate.ensemble"), needs=("fit", "cv")),)
