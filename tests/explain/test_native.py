from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from idhhpc.explain.native import save_cam_nifti


def test_model_space_and_native_cams(tmp_path):
    cam = np.random.default_rng(0).random((8, 8, 8)).astype(np.float64)
    affine = np.diag([1.5, 1.5, 1.5, 1.0])
    native_affine = np.diag([1.0, 1.0, 2.0, 1.0])

    def to_native(volume):
        return nib.Nifti1Image(np.pad(volume, 1), native_affine)

    written = save_cam_nifti(cam, tmp_path / "cam.nii.gz", affine, tmp_path / "cam_native.nii.gz", to_native)
    model_img, native_img = nib.load(written["model"]), nib.load(written["native"])
    assert model_img.get_data_dtype() == np.float32 and native_img.get_data_dtype() == np.float32
    np.testing.assert_allclose(model_img.get_fdata(), cam, atol=1e-6)
    np.testing.assert_allclose(model_img.affine, affine)
    assert native_img.shape == (10, 10, 10)
    np.testing.assert_allclose(native_img.affine, native_affine)


def test_model_space_only_and_argument_checks(tmp_path):
    written = save_cam_nifti(np.zeros((4, 4, 4)), tmp_path / "cam.nii", np.eye(4))
    assert set(written) == {"model"} and nib.load(written["model"]).shape == (4, 4, 4)
    with pytest.raises(ValueError, match="together"):
        save_cam_nifti(np.zeros((4, 4, 4)), tmp_path / "c.nii.gz", np.eye(4), tmp_path / "n.nii.gz")
    with pytest.raises(ValueError, match=".nii"):
        save_cam_nifti(np.zeros((4, 4, 4)), tmp_path / "cam.png", np.eye(4))
