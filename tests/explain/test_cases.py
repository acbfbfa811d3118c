from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch
from torch import nn

from idhhpc.explain.explainer import explain_cases
from idhhpc.ids import UnsafePatientId

N = 24


def _small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv3d(4, 8, 3, padding=1), nn.ReLU(), nn.Conv3d(8, 8, 3, stride=2, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(8, 2),
    ).eval()


def _case(patient_id: str, label: int, seed: int, prob: float | None = None) -> dict:
    rng = np.random.default_rng(seed)
    brain = np.zeros((N, N, N), np.uint8)
    brain[3:21, 3:21, 3:21] = 1
    tumor = np.zeros((N, N, N), np.uint8)
    tumor[12:17, 12:17, 12:17] = 2
    tumor[13:16, 13:16, 13:16] = 4
    image = (rng.standard_normal((4, N, N, N)) * brain).astype(np.float16)
    case = {"patient_id": patient_id, "label": label, "image": image, "tumor": tumor, "brain": brain}
    return case if prob is None else {**case, "prob": prob}


def test_explain_cases_writes_everything(tmp_path):
    cases = [_case("P-001", 1, 0, prob=0.9), _case("P-002", 0, 1, prob=0.3), _case("P-003", 1, 2)]
    to_native = lambda cam, case: nib.Nifti1Image(np.pad(cam, 2), np.eye(4))  # noqa: E731
    result = explain_cases(_small_cnn(), cases, tmp_path, threshold=0.5, target_layer="2",
                           methods=("gradcam", "gradcam++"), to_native=to_native)
    first = tmp_path / "P-001"
    assert (first / "overlay_gradcam_mutant.png").exists() and (first / "cam_gradcampp_mutant.nii.gz").exists()
    assert not (first / "overlay_gradcam_wildtype.png").exists()
    second = tmp_path / "P-002"
    assert (second / "overlay_gradcam_wildtype.png").exists() and (second / "overlay_gradcam_mutant.png").exists()
    assert nib.load(second / "cam_gradcam_wildtype_native.nii.gz").shape == (N + 4,) * 3
    saved = json.loads((tmp_path / "cam_statistics.json").read_text())
    assert saved["summary"] == pytest.approx(result["summary"], nan_ok=True)
    assert {"cam/energy_in_tumor", "cam/pointing_game", "cam/chance_energy_in_tumor"} <= set(saved["summary"])
    assert [c["correct"] for c in saved["cases"]][:2] == [True, True]
    gallery = (tmp_path / "gallery.md").read_text()
    assert gallery.index("P-001") < gallery.index("P-002")
    assert "data:image/png;base64," in (tmp_path / "gallery.html").read_text()


def test_unsafe_patient_id_is_refused(tmp_path):
    with pytest.raises(UnsafePatientId):
        explain_cases(_small_cnn(), [_case("../escape", 1, 0)], tmp_path / "out", 0.5, "2")
    assert not (tmp_path / "escape").exists() and not (tmp_path / "out").exists()
