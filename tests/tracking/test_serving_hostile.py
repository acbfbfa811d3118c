"""The registered pyfunc behind a real ``mlflow models serve`` on 127.0.0.1, facing a hostile
client: it reads patient folders only inside ``IDHHPC_PATIENT_ROOTS`` (no ``..``, no symlink
out), refuses crafted files and malformed volumes with HTTP 400 naming no server path, in
bounded memory, and scores a good patient. One server serves every case."""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException

from idhhpc.constants import PATIENT_ROOTS_VARIABLE
from idhhpc.tracking.model import MODEL_ARTIFACT, SIGNATURE, IdhModel, model_metadata, requirements
from tests.support.hostile_nifti import CASES, GOOD, case_patients, write_hostile_cohort
from tests.support.mlflow_server import ModelServer
from tests.support.synthetic_cases import write_case
from tests.support.untrained import write_untrained_export

GIB_IN_MIB = 1024
SIZE = 32
ABSOLUTE_PATH = re.compile(r"(^|[\s'\"(=:])/\w")


@pytest.fixture(scope="module")
def layout(tmp_path_factory) -> dict:
    """A root of good and crafted patients, a folder outside it, links from the root to it."""
    base = tmp_path_factory.mktemp("serving")
    root, outside = base / "allowed", base / "elsewhere"
    folders = write_hostile_cohort(root)
    secret = write_case(outside, "UCSF-PDGM-0900").images["FLAIR"].parent
    (root / "UCSF-PDGM-0901_nifti").symlink_to(secret, target_is_directory=True)
    linked = write_case(root, "UCSF-PDGM-0902").images["FLAIR"].parent
    flair = next(linked.glob("*_FLAIR.nii.gz"))
    flair.unlink()
    flair.symlink_to(next(secret.glob("*_FLAIR.nii.gz")))
    model_dir = base / "model"
    export = write_untrained_export(base / "export" / "model.pt")
    mlflow.pyfunc.save_model(str(model_dir), python_model=IdhModel(), artifacts={MODEL_ARTIFACT: str(export)},
                             signature=SIGNATURE, metadata=model_metadata(export), pip_requirements=requirements())
    return {"base": base, "root": root, "outside": outside, "secret": secret, "folders": folders,
            "model": model_dir}


@pytest.fixture(scope="module")
def server(layout):
    served = ModelServer(layout["model"], layout["base"] / "serve.log",
                         {PATIENT_ROOTS_VARIABLE: str(layout["root"])}).start()
    yield served
    served.stop()


def _patient_request(path: str) -> bytes:
    return json.dumps({"dataframe_split": {"columns": ["patient_dir"], "data": [[path]]}}).encode()


def _image_request(image) -> bytes:
    return json.dumps({"dataframe_split": {"columns": ["image"], "data": [[image]]}}).encode()


def _our_message(reply: str) -> str:
    """The model's own message (MLflow prefixes it with the request it failed on)."""
    return json.loads(reply)["message"].rsplit("Error: ", 1)[-1]


def _refused(server, payload: bytes, layout) -> str:
    status, reply = server.invoke(payload)
    assert status == 400, (status, reply)
    message = _our_message(reply)
    assert not ABSOLUTE_PATH.search(message), message  # no path of the server's, not even the client's own
    for leak in ("Traceback", "site-packages", str(layout["secret"]), str(layout["outside"]) + "/"):
        assert leak not in reply, (leak, reply)
    return message


def test_patient_folders_are_read_only_inside_the_roots(server, layout):
    root, secret = layout["root"], layout["secret"]
    status, reply = server.invoke(_patient_request(str(layout["folders"][GOOD[0]])))
    assert status == 200, reply
    [row] = json.loads(reply)["predictions"]
    assert math.isfinite(row["prob_mutant"]) and row["label"] in ("IDH-mutant", "IDH-wildtype")
    outside = _refused(server, _patient_request(str(secret)), layout)
    missing = _refused(server, _patient_request(str(secret.parent / "UCSF-PDGM-0999_nifti")), layout)
    assert PATIENT_ROOTS_VARIABLE in outside and outside.replace("0900", "0999") == missing, "no existence oracle"
    escape = _refused(server, _patient_request(f"{root}/../{secret.parent.name}/{secret.name}"), layout)
    assert "outside the folders this server may read" in escape
    linked_folder = _refused(server, _patient_request(str(root / "UCSF-PDGM-0901_nifti")), layout)
    assert "outside the folders this server may read" in linked_folder
    linked_file = _refused(server, _patient_request(str(root / "UCSF-PDGM-0902_nifti")), layout)
    assert "UCSF-PDGM-0902_FLAIR.nii.gz: outside the folders this server may read" in linked_file
    relative = _refused(server, _patient_request("../../../../etc"), layout)
    assert "outside the folders" in relative


def test_crafted_files_and_volumes_are_refused_in_bounded_memory(server, layout):
    server.invoke(_patient_request(str(layout["folders"][GOOD[1]])))  # warm: libraries and model in memory
    before = server.peak_rss_mib()
    for name, patient in case_patients().items():
        message = _refused(server, _patient_request(str(layout["folders"][patient])), layout)
        assert CASES[name][2] in message and f"{patient}_FLAIR" in message, (name, message)
    good = np.zeros((4, SIZE, SIZE, SIZE))
    status, reply = server.invoke(_image_request(good.tolist()))
    assert status == 200 and math.isfinite(json.loads(reply)["predictions"][0]["prob_mutant"]), reply
    for value, expected in ((np.nan, "NaN, infinite"), (np.inf, "NaN, infinite"), (1e300, "beyond")):
        bad = good.copy()
        bad[0, 1, 2, 3] = value
        assert expected in _refused(server, _image_request(bad.tolist()), layout)
    wrong = [(np.zeros((4, 64, 64, 64)), "(4, 64, 64, 64)"), (np.zeros((3, SIZE, SIZE, SIZE)), "(3, 32, 32, 32)")]
    for image, shape in wrong:
        message = _refused(server, _image_request(image.tolist()), layout)
        assert f"image has shape {shape}; this model takes (4, 32, 32, 32)" in message
    assert server.peak_rss_mib() - before < GIB_IN_MIB, (before, server.peak_rss_mib())
    log = (layout["base"] / "serve.log").read_text(errors="replace")
    assert str(layout["root"]) in log, "the server's log keeps the detail the client is not told"


def test_without_roots_patient_dir_is_refused_and_image_still_works(layout, monkeypatch):
    monkeypatch.delenv(PATIENT_ROOTS_VARIABLE, raising=False)
    model = mlflow.pyfunc.load_model(str(layout["model"]))
    with pytest.raises(MlflowException) as refused:
        model.predict(pd.DataFrame({"patient_dir": [str(layout["folders"][GOOD[0]])]}))
    assert PATIENT_ROOTS_VARIABLE in refused.value.message and refused.value.get_http_status_code() == 400
    assert not ABSOLUTE_PATH.search(refused.value.message), refused.value.message
    answer = model.predict(pd.DataFrame({"image": [np.zeros((4, SIZE, SIZE, SIZE)).tolist()]}))
    assert math.isfinite(answer["prob_mutant"][0]) and answer["label"][0].startswith("IDH-")
    assert os.environ.get(PATIENT_ROOTS_VARIABLE) is None
