"""Predict the IDH status of one new patient with an exported model, and explain it.

    python -m idhhpc.predict --checkpoint runs/dryrun/checkpoints/fit/model.pt \\
        --patient /data/UCSF-PDGM-0004_nifti [--out DIR] [--device cpu|cuda|auto]
    python -m idhhpc.predict --model models:/idhhpc-idh-b0/1 --patient ... [--tracking-uri URI]

``--model`` takes a registered MLflow model instead of the file (``models:/NAME/VERSION`` or
any model URI; the registry is ``--tracking-uri``, else ``$MLFLOW_TRACKING_URI``).

Prints the mutant probability and the class at the threshold chosen on validation, and writes
Grad-CAM overlays, CAM NIfTIs (model space and the patient's native grid), CAM-in-tumor
statistics when a tumor mask is present, and ``prediction.json`` to ``--out``
(default ``./idhhpc-predict/<patient_id>/``). Inputs that fail validation exit with code 2
and write nothing. The outputs appear all at once: they are written to a hidden sibling
folder that is renamed into place, replacing ``--out`` only when that deletes nothing
``predict`` did not write (:mod:`idhhpc.output_folder`; ``--force`` replaces any other folder).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

import nibabel as nib
import numpy as np
import torch

from idhhpc.atomic import atomic_write_json
from idhhpc.constants import CLASS_NAMES, PREDICTION_FILE, SEGMENTATION_FILE, TUMOR_SUBREGIONS
from idhhpc.data.cases import CaseFiles, CaseRejected, PreprocessedCase
from idhhpc.data.cohort import case_from_folder
from idhhpc.data.geometry import output_affine, to_native
from idhhpc.data.preprocess import preprocess_case
from idhhpc.devices import resolve_device
from idhhpc.evaluate.segmentation import compartment_dice
from idhhpc.explain.explainer import explain_cases
from idhhpc.ids import UnsafePatientId, validate_patient_id
from idhhpc.output_folder import OutputRefused, replace_folder, replaceable_output
from idhhpc.predictor import ModelFileError, Predictor, predicted_class

EXIT_INVALID_INPUT = 2


class InvalidInput(ValueError):
    """A model file or patient folder that cannot be used; the message says which file and why."""


def predict(checkpoint: Path, patient_dir: Path, out: Path | None = None, device: str = "auto",
            tumor_mask: Path | None = None, model_uri: str | None = None, force: bool = False) -> dict[str, Any]:
    """Validate, preprocess, predict and explain one patient; raises :class:`InvalidInput` before
    writing anything when the checkpoint, the device or the patient's files cannot be used.

    ``tumor_mask`` replaces the folder's ``*_tumor_segmentation.nii.gz``; a model trained on the
    tumour region (``preprocess.roi: tumor``) needs one of the two. ``model_uri`` names where
    ``checkpoint`` came from (a registered model) in the outputs. ``force`` replaces an ``out``
    that holds what no prediction wrote.
    """
    out = _output_folder(out, Path(patient_dir), Path(checkpoint), tumor_mask, force)
    predictor = _load(Path(checkpoint), _device(device))
    case_files = find_patient_files(Path(patient_dir), predictor, tumor_mask)
    case = preprocess_patient(case_files, predictor)
    prob, segmentation = predictor.predict_with_segmentation(case.image, segment=predictor.segments)
    predicted = predicted_class(prob, predictor.threshold)
    result = {"patient_id": case.patient_id, "prob_mutant": prob, "predicted": predicted,
              "predicted_class": f"IDH-{CLASS_NAMES[predicted]}", "threshold": predictor.threshold,
              "threshold_method": predictor.threshold_method, "model_run": predictor.run,
              "model_val_auc": predictor.val_auc, "checkpoint": model_uri or str(Path(checkpoint).resolve()),
              "patient_dir": str(Path(patient_dir).resolve()), "device": str(predictor.device),
              "inputs": {m: str(p) for m, p in case_files.images.items()},
              "tumor_mask": str(case_files.tumor_mask) if case_files.tumor_mask else None,
              "crop": "located" if case.located is not None else "tumor mask" if case_files.tumor_mask else "brain",
              "warnings": case.warnings, "out": str(out.resolve())}
    if segmentation is not None:
        result["segmentation"] = segmentation_summary(segmentation, case)
    result["explanation"] = _explain_into(out, predictor, case, result, segmentation)
    return result


def _output_folder(out: Path | None, patient_dir: Path, checkpoint: Path, tumor_mask: Path | None,
                   force: bool) -> Path:
    out = Path(out) if out is not None else Path("idhhpc-predict") / patient_id_of(patient_dir)
    inputs = [patient_dir, checkpoint, *([tumor_mask] if tumor_mask is not None else [])]
    try:
        return replaceable_output(out, inputs, force)
    except OutputRefused as err:
        raise InvalidInput(str(err)) from None


def _device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise InvalidInput("--device cuda: no CUDA device is available here (use cpu or auto)")
    return resolve_device(name)


def _load(checkpoint: Path, device: torch.device) -> Predictor:
    try:
        return Predictor.load(checkpoint, device)
    except ModelFileError as err:
        raise InvalidInput(str(err)) from None


@contextlib.contextmanager
def registered_export(model_uri: str, tracking_uri: str | None = None) -> Iterator[Path]:
    """The ``model.pt`` inside an MLflow model (``models:/NAME/VERSION``), downloaded for the block."""
    from mlflow.exceptions import MlflowException
    from mlflow.models import Model

    import mlflow

    with tempfile.TemporaryDirectory(prefix="idhhpc-model-") as folder, using_tracking_uri(tracking_uri):
        try:
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=folder))
            artifacts = Model.load(local).flavors.get("python_function", {}).get("artifacts", {})
        except (MlflowException, OSError) as err:
            where = mlflow.get_tracking_uri()
            raise InvalidInput(f"--model {model_uri}: cannot load it from {where}: {err}") from None
        if len(artifacts) != 1:
            raise InvalidInput(f"--model {model_uri}: not an idhhpc model (expected one model.pt artifact, "
                               f"found {sorted(artifacts)})")
        yield local / next(iter(artifacts.values()))["path"]


@contextlib.contextmanager
def using_tracking_uri(uri: str | None) -> Iterator[None]:
    """MLflow resolves ``models:/`` and logs models through its global URI (its ``tracking_uri``
    arguments do not reach the registry lookup): set it for the block, then restore it."""
    if uri is None:
        yield
        return
    import mlflow

    previous = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)


def patient_id_of(folder: Path) -> str:
    """``UCSF-PDGM-0004_nifti`` → ``UCSF-PDGM-0004``; any other folder name is taken as it is."""
    name = Path(folder).resolve().name.removesuffix("_nifti")
    try:
        return validate_patient_id(name)
    except UnsafePatientId as err:
        raise InvalidInput(f"{folder}: folder name does not give a usable patient id: {err}") from None


def find_patient_files(folder: Path, predictor: Predictor, tumor_mask: Path | None = None,
                       confine: Callable[[Path], Path] | None = None) -> CaseFiles:
    """The patient's modalities (and masks) found and checked exactly as cohort ingestion does;
    ``confine`` maps each file found to the path to read before it is read (the served model's roots)."""
    if not folder.is_dir():
        raise InvalidInput(f"{folder}: patient folder not found")
    if tumor_mask is not None and not Path(tumor_mask).is_file():
        raise InvalidInput(f"--tumor-mask {tumor_mask}: file not found")
    config = predictor.config
    case, problem = case_from_folder(patient_id_of(folder), None, folder, config.data.modalities,
                                     config.data.use_bias_corrected, config.preprocess.affine_atol,
                                     tumor_mask=tumor_mask, max_voxels=config.preprocess.max_voxels, confine=confine)
    if case is None:
        raise InvalidInput(problem)
    if config.preprocess.roi == "tumor" and case.tumor_mask is None and predictor.locator is None:
        raise InvalidInput(f"{folder}: this model looks at the tumour region (preprocess.roi: tumor) and needs the "
                           "patient's tumour segmentation: put *_tumor_segmentation.nii.gz in the folder or pass "
                           "--tumor-mask FILE")
    return case


def preprocess_patient(case: CaseFiles, predictor: Predictor) -> PreprocessedCase:
    try:
        locate = predictor.locator if case.tumor_mask is None else None
        return preprocess_case(case, predictor.config.preprocess, locate=locate)
    except CaseRejected as err:
        raise InvalidInput(f"rejected by preprocessing: {err.reason}") from None


def segmentation_summary(segmentation: np.ndarray, case: PreprocessedCase) -> dict[str, Any]:
    """The predicted compartments' volumes (in model voxels) and, with a reference mask, their Dice."""
    summary: dict[str, Any] = {"file": SEGMENTATION_FILE,
                               "voxels": {name: int((segmentation == label).sum()) for name, label in TUMOR_SUBREGIONS.items()}}
    if case.tumor is not None:
        summary["dice"] = finite_or_none(compartment_dice(segmentation, case.tumor))
    return summary


def finite_or_none(values: dict[str, Any]) -> dict[str, Any]:
    """NaN is not JSON: statistics that are undefined (no tumor mask) become null."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in values.items()}


def _explain_into(out: Path, predictor: Predictor, case: PreprocessedCase, result: dict[str, Any],
                  segmentation: np.ndarray | None = None) -> dict[str, Any]:
    """Run the explain stage's per-case code in a staging folder, add ``prediction.json``, rename
    the patient's part onto ``out``; the staging folder's gallery (one case) is dropped."""
    config = predictor.config
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        item = {"image": case.image, "label": None, "patient_id": case.patient_id, "prob": result["prob_mutant"],
                "tumor": case.tumor, "brain": case.brain, "geometry": case.geometry,
                "affine": output_affine(case.geometry)}
        written = explain_cases(predictor.model, [item], staging, predictor.threshold, config.explain.layer,
                                methods=tuple(config.explain.methods),
                                to_native=lambda cam, c: to_native(cam, c["geometry"]))
        built = staging / case.patient_id
        if segmentation is not None:
            nib.save(to_native(segmentation, case.geometry, order=0), built / SEGMENTATION_FILE)
        explanation = _relative_files(written["cases"][0], built, case.tumor is not None)
        atomic_write_json(built / PREDICTION_FILE, result | {"explanation": explanation})
        replace_folder(built, out)
        return explanation
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _relative_files(record: dict[str, Any], case_dir: Path, has_tumor: bool) -> dict[str, Any]:
    cams = []
    for cam in record["cams"]:
        files = {kind: Path(path).relative_to(case_dir).as_posix() for kind, path in cam["files"].items()}
        entry = {"method": cam["method"], "class": cam["class"], "predicted_class": cam["predicted_class"],
                 "files": files}
        if has_tumor:
            entry["statistics"] = finite_or_none(cam["statistics"])
        cams.append(entry)
    return {"cams": cams}


def headline(result: dict[str, Any]) -> str:
    return (f"{result['patient_id']}: {result['predicted_class']}  "
            f"P(IDH mutant) = {result['prob_mutant']:.4f}  "
            f"(threshold {result['threshold']:.4f}, chosen on validation by {result['threshold_method']})")


def details(result: dict[str, Any]) -> str:
    lines = [f"  model: {result['checkpoint']} (run {result['model_run']}, validation AUC {result['model_val_auc']:.3f})",
             f"  device: {result['device']}",
             *(f"  {modality}: {path}" for modality, path in result["inputs"].items()),
             *(f"  warning: {w}" for w in result["warnings"])]
    for cam in result["explanation"]["cams"]:
        stats = cam.get("statistics") or {}
        energy = stats.get("energy_in_tumor")
        chance = stats.get("chance_energy_in_tumor")
        measured = f", CAM energy in tumor {energy:.3f} (chance {chance:.3f})" if energy is not None else ""
        lines.append(f"  {cam['method']} for {cam['class']}: {cam['files']['overlay']}{measured}")
    lines.append(f"  written to {result['out']}/ (prediction.json, overlays, CAM NIfTIs)")
    return "\n".join(lines)


def predict_with(model: str | Path, patient_dir: Path, out: Path | None = None, device: str = "auto",
                 tumor_mask: Path | None = None, force: bool = False, tracking_uri: str | None = None) -> dict[str, Any]:
    """:func:`predict` with an exported file or a model URI (``models:/NAME/VERSION``, ``runs:/...``)."""
    if isinstance(model, str) and ":/" in model:
        with registered_export(model, tracking_uri) as export:
            return predict(export, patient_dir, out, device, tumor_mask, model_uri=model, force=force)
    return predict(Path(model), patient_dir, out, device, tumor_mask, force=force)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m idhhpc.predict", description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", type=Path, help="exported model (checkpoints/fit/model.pt)")
    source.add_argument("--model", help="registered MLflow model, e.g. models:/idhhpc-idh-b7/1")
    parser.add_argument("--tracking-uri", help="MLflow registry of --model (default: $MLFLOW_TRACKING_URI)")
    parser.add_argument("--patient", required=True, type=Path, help="folder with the patient's FLAIR, T1, T1c, T2")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default ./idhhpc-predict/<patient_id>/)")
    parser.add_argument("--force", action="store_true",
                        help="replace --out even if it holds files that are not an earlier prediction")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--tumor-mask", type=Path, default=None,
                        help="tumour segmentation (NIfTI, labels 0/1/2/4) if not in the folder; "
                             "required by models trained with preprocess.roi: tumor")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        result = predict_with(args.model or args.checkpoint, args.patient, args.out, args.device, args.tumor_mask,
                              args.force, args.tracking_uri)
    except InvalidInput as err:
        print(f"refused: {err}", file=sys.stderr)
        return EXIT_INVALID_INPUT
    print(headline(result))
    print(details(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
