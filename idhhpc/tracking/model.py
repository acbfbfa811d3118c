"""The final model as an MLflow pyfunc: logged, registered, served, and loaded back by ``predict``.

``IdhModel`` wraps the exported ``model.pt`` in MLflow's ``python_function`` flavour, so
``mlflow models predict|serve -m models:/idhhpc-idh-b7/1 --env-manager local`` answer
``prob_mutant`` and ``label`` for

- ``patient_dir``: a patient folder inside the roots named by ``IDHHPC_PATIENT_ROOTS`` on the
  server, found, checked and preprocessed exactly as ``python -m idhhpc.predict`` does (the same
  functions), or
- ``image``: a preprocessed (C, S, S, S) volume as the shards hold it, as nested lists.

What each input must be, and what a client is told when it is not: :mod:`idhhpc.tracking.serving`.

The class is pickled by reference (``idhhpc.tracking.model.IdhModel``), so the model loads
where idhhpc is installed, which is what ``--env-manager local`` uses. The model is logged with
``create_logged_model`` + ``log_model(model_id=...)``: no active run is needed and the
evaluate run's start and end times stay those of its work.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from mlflow.entities.model_registry import ModelVersion
from mlflow.models import ModelSignature
from mlflow.tracking import MlflowClient
from mlflow.types import DataType
from mlflow.types.schema import Array, ColSpec, Schema

import mlflow
from idhhpc.config import JobConfig
from idhhpc.constants import CLASS_NAMES
from idhhpc.predict import using_tracking_uri
from idhhpc.predictor import Predictor, predicted_labels, read_export
from idhhpc.tracking.serving import BadRequest, answering_clients, checked_image, confined_patient

MODEL_ARTIFACT = "model"
"""Key of the export among the MLflow model's artifacts (``artifacts/model.pt`` in its folder)."""
SIGNATURE = ModelSignature(
    inputs=Schema([ColSpec(DataType.string, "patient_dir", required=False),
                   ColSpec(Array(Array(Array(Array(DataType.double)))), "image", required=False)]),
    outputs=Schema([ColSpec(DataType.double, "prob_mutant"), ColSpec(DataType.string, "label")]),
)


def registered_name(config: JobConfig) -> str:
    """``idhhpc-idh-b0`` for the dry run, ``idhhpc-idh-b7`` for the study's network."""
    return f"idhhpc-idh-{config.model.variant}"


class IdhModel(mlflow.pyfunc.PythonModel):
    """P(IDH mutant) and the label at the threshold chosen on validation, per input row."""

    def load_context(self, context: Any) -> None:
        device = (context.model_config or {}).get("device", "auto")
        self.predictor = Predictor.load(context.artifacts[MODEL_ARTIFACT], device)

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        """Refusals are HTTP 400 without server paths, failures 500 (:mod:`idhhpc.tracking.serving`)."""
        with answering_clients():
            probs = [self.prob_mutant(row) for row in model_input.to_dict(orient="records")]
            labels = [f"IDH-{CLASS_NAMES[c]}" for c in predicted_labels(probs, self.predictor.threshold)]
        return pd.DataFrame({"prob_mutant": np.asarray(probs, dtype=np.float64), "label": labels})

    def prob_mutant(self, row: Mapping[str, Any]) -> float:
        image = row.get("image")
        if image is not None and not _missing(image):
            return self.predictor.predict_image(checked_image(image, self.predictor))
        folder = row.get("patient_dir")
        if folder is None or _missing(folder):
            raise BadRequest("each input row needs a 'patient_dir' (a patient folder) or an 'image' (C, S, S, S)")
        return self.predictor.predict_image(confined_patient(folder, self.predictor))


def log_registered_model(config: JobConfig, tracking_uri: str, run_id: str, export: Path) -> ModelVersion:
    """Log ``export`` as the pyfunc of run ``run_id`` and register it as a new version of
    :func:`registered_name`; threshold and calibration are in the model's metadata."""
    name = registered_name(config)
    metadata = model_metadata(export)
    with using_tracking_uri(tracking_uri):
        client = MlflowClient(tracking_uri)
        experiment_id = client.get_run(run_id).info.experiment_id
        logged = client.create_logged_model(experiment_id, name=name, source_run_id=run_id,
                                            params={k: str(v) for k, v in metadata.items()})
        mlflow.pyfunc.log_model(name=name, python_model=IdhModel(), artifacts={MODEL_ARTIFACT: str(export)},
                                signature=SIGNATURE, metadata=metadata, pip_requirements=requirements(),
                                model_id=logged.model_id)
        version = mlflow.register_model(f"models:/{logged.model_id}", name,
                                        tags={"threshold": str(metadata["threshold"]), "run_id": run_id})
        client.update_model_version(name, version.version, description=_description(config, metadata))
    return version


def model_metadata(export: Path) -> dict[str, Any]:
    """What a user of the registered model needs besides the weights (read without building it)."""
    payload = read_export(export)
    config = JobConfig.model_validate_json(payload["config"])
    return {"threshold": float(payload["threshold"]), "threshold_method": str(payload["threshold_method"]),
            "calibration": {"method": config.evaluate.calibration,
                            "temperature": float(payload.get("temperature", 1.0))},
            "val_auc": float(payload["val_auc"]), "training_run": str(payload["run"]),
            "variant": config.model.variant, "input_size": config.preprocess.size,
            "modalities": list(config.data.modalities), "labels": [f"IDH-{name}" for name in CLASS_NAMES]}


def requirements() -> list[str]:
    """idhhpc's own dependencies at their installed versions (the model runs idhhpc code)."""
    pins = []
    for requirement in importlib.metadata.requires("idhhpc") or []:
        if "extra ==" in requirement:
            continue
        name = re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0]
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            pins.append(f"{name}=={importlib.metadata.version(name)}")
    return pins


def _description(config: JobConfig, metadata: Mapping[str, Any]) -> str:
    return (f"IDH status from FLAIR/T1/T1c/T2 ({config.model.variant}, {metadata['input_size']}^3). Input: column "
            f"`patient_dir` (a patient folder) or `image` (preprocessed). Output: `prob_mutant`, `label` at "
            f"threshold {metadata['threshold']:.4f} ({metadata['threshold_method']}). "
            "Serve with `mlflow models serve -m models:/<name>/<version> --env-manager local` in idhhpc's venv.")


def _missing(value: Any) -> bool:
    return isinstance(value, float) and np.isnan(value)
