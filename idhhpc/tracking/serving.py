"""What the served model accepts from a client, and what it tells one.

A client of ``mlflow models serve`` is someone else, so each request row is checked before
anything is read or scored:

- ``patient_dir``: a string naming a folder inside ``IDHHPC_PATIENT_ROOTS``; the folder and every
  file found in it are confined there (:mod:`idhhpc.data.roots`), then found, read (bounded,
  :mod:`idhhpc.data.nifti_reading`) and preprocessed as ``python -m idhhpc.predict`` does.
- ``image``: exactly the model's (C, S, S, S), C and S from the export's job (as the registered
  model's metadata states them), finite and inside float16's range as preprocessing writes it.

A refused row is MLflow's ``INVALID_PARAMETER_VALUE`` (HTTP 400) with a one-line reason in which
every absolute path is cut to its last part, so no server path reaches the client; anything
unforeseen is ``INTERNAL_ERROR`` (HTTP 500) saying only a reference, under which the server's
log keeps the traceback. No row is ever answered with a label for a non-finite probability.
"""

from __future__ import annotations

import contextlib
import logging
import re
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INTERNAL_ERROR

from idhhpc.data.roots import OutsideRoots, PatientRoots
from idhhpc.predict import InvalidInput, find_patient_files, preprocess_patient
from idhhpc.predictor import Predictor

log = logging.getLogger(__name__)
MAX_PATH_CHARS = 4096
FLOAT16_MAX = float(np.finfo(np.float16).max)
_ABSOLUTE_PATH = re.compile(r"(?<![\w.~-])/(?:[^\s/'\"(),;]+/)*([^\s/'\"(),;]*)")


class BadRequest(ValueError):
    """A request row the model refuses; the message is for the client."""


def client_message(text: str) -> str:
    """``text`` with every absolute path cut to its last part, on one line."""
    return _ABSOLUTE_PATH.sub(lambda match: match.group(1) or "/", " ".join(str(text).split()))


@contextlib.contextmanager
def answering_clients() -> Iterator[None]:
    """Turn refusals into HTTP 400 and anything else into HTTP 500, neither with server paths."""
    try:
        yield
    except (BadRequest, InvalidInput, OutsideRoots) as err:
        log.warning("request refused: %s", err)
        raise MlflowException.invalid_parameter_value(client_message(str(err))) from None
    except MlflowException:
        raise
    except Exception:
        reference = uuid.uuid4().hex[:12]
        log.exception("request %s failed", reference)
        raise MlflowException(f"internal error while scoring (reference {reference}; the server log has the "
                              "details)", error_code=INTERNAL_ERROR) from None


def checked_image(value: Any, predictor: Predictor) -> np.ndarray:
    """``value`` as the float32 (C, S, S, S) volume the model takes, or :class:`BadRequest`."""
    config = predictor.config
    expected = (len(config.data.modalities) + config.preprocess.extra_channels, *(config.preprocess.size,) * 3)
    outer = _outer_shape(value, len(expected))
    if outer != expected:  # before converting: a wrong volume is refused without copying it
        raise BadRequest(f"image has shape {_shape(outer)}; this model takes {_shape(expected)} "
                         f"({', '.join(config.data.modalities)} preprocessed to {config.preprocess.size}^3)")
    try:
        image = np.asarray(value, dtype=np.float64)
    except (ValueError, TypeError):
        raise BadRequest(f"image must be a {_shape(expected)} array of numbers (nested lists of equal "
                         "lengths)") from None
    if image.shape != expected:
        raise BadRequest(f"image has shape {_shape(image.shape)}; this model takes {_shape(expected)} "
                         f"({', '.join(config.data.modalities)} preprocessed to {config.preprocess.size}^3)")
    finite = np.isfinite(image) & (np.abs(image) <= FLOAT16_MAX)
    if not finite.all():
        raise BadRequest(f"image has {int(finite.size - finite.sum())} values that are NaN, infinite or beyond "
                         f"+-{FLOAT16_MAX:g} (a preprocessed volume is finite float16)")
    return image.astype(np.float32)


def confined_patient(value: Any, predictor: Predictor) -> np.ndarray:
    """The preprocessed image of the patient folder ``value``, read only inside the allowed roots."""
    if not isinstance(value, str):
        raise BadRequest(f"patient_dir must be one folder path (a string) per row, not a {type(value).__name__}")
    if not value.strip() or len(value) > MAX_PATH_CHARS or "\0" in value:
        raise BadRequest(f"patient_dir must be a path of 1 to {MAX_PATH_CHARS} characters without NUL")
    roots = PatientRoots.from_environment()
    folder = roots.confine(value)
    case = find_patient_files(folder, predictor, confine=roots.confine)
    return preprocess_patient(case, predictor).image


def _outer_shape(value: Any, depth: int) -> tuple[int, ...]:
    """The lengths along the first element of each nesting level, ``depth`` levels deep."""
    shape = []
    for _ in range(depth):
        try:
            shape.append(len(value))
            value = value[0]
        except (TypeError, IndexError, KeyError):
            break
    return tuple(shape)


def _shape(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(map(str, shape)) + ")"
