"""The bounded NIfTI reader against nibabel on good files, and its refusals of bad ones."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest

from idhhpc.data.nifti_reading import UnreadableNifti, read_header, read_volume
from idhhpc.ids import UnsafePatientId, validate_patient_id
from tests.support.synthetic_cases import LPS_AFFINE

CAP = 2**20


def _volume(dtype=np.float32, shape=(12, 10, 8)) -> np.ndarray:
    return (np.random.default_rng(0).random(shape) * 1000).astype(dtype)


@pytest.mark.parametrize("kind", ["nii.gz", "nii", "nifti2", "big-endian", "scaled-int16"])
def test_good_files_read_as_nibabel_reads_them(tmp_path, kind):
    data = _volume(np.int16 if kind == "scaled-int16" else np.float32)
    image = (nib.Nifti2Image if kind == "nifti2" else nib.Nifti1Image)(data, LPS_AFFINE)
    if kind == "big-endian":
        image = nib.Nifti1Image(data.astype(">f4"), LPS_AFFINE)
    if kind == "scaled-int16":
        image.header.set_slope_inter(0.5, 3.0)
    path = tmp_path / ("a.nii" if kind == "nii" else "a.nii.gz")
    raw = image.to_bytes()
    path.write_bytes(raw if kind == "nii" else gzip.compress(raw))
    voxels, affine = read_volume(path, CAP)
    expected = nib.load(path)
    np.testing.assert_allclose(voxels, expected.get_fdata(), rtol=1e-6)
    np.testing.assert_allclose(affine, expected.affine)
    assert read_header(path, CAP).shape == data.shape


def test_gzip_members_and_zero_padding_are_one_stream(tmp_path):
    raw = nib.Nifti1Image(_volume(), LPS_AFFINE).to_bytes()
    path = tmp_path / "members.nii.gz"
    path.write_bytes(gzip.compress(raw[:1000]) + gzip.compress(raw[1000:]) + bytes(64))
    np.testing.assert_array_equal(read_volume(path, CAP)[0], _volume())


@pytest.mark.parametrize("damage, reason", [
    (lambda raw: raw + gzip.compress(b"x"), "inflates to more than"),
    (lambda raw: raw + b"garbage", "data after the end of the gzip stream"),
    (lambda raw: raw[:-20], "truncated"),
    (lambda raw: raw[:-8] + b"\0\0\0\0" + raw[-4:], "corrupt gzip data"),  # CRC
])
def test_damaged_gzip_streams_are_refused(tmp_path, damage, reason):
    path = tmp_path / "a.nii.gz"
    path.write_bytes(damage(gzip.compress(nib.Nifti1Image(_volume(), LPS_AFFINE).to_bytes())))
    with pytest.raises(UnreadableNifti, match=reason):
        read_volume(path, CAP)


def test_the_cap_counts_voxels_and_the_padded_cube(tmp_path):
    path = tmp_path / "a.nii.gz"
    nib.save(nib.Nifti1Image(_volume(shape=(64, 4, 4)), LPS_AFFINE), path)
    assert read_header(path, 64**3).shape == (64, 4, 4)
    with pytest.raises(UnreadableNifti, match="too elongated"):
        read_header(path, 64**3 - 1)
    with pytest.raises(UnreadableNifti, match="more than preprocess.max_voxels"):
        read_header(path, 64 * 4 * 4 - 1)


def test_unsupported_types_and_affines_are_refused(tmp_path):
    path = tmp_path / "a.nii.gz"
    nib.save(nib.Nifti1Image(_volume().astype(np.complex64), LPS_AFFINE), path)
    with pytest.raises(UnreadableNifti, match="not a plain number type"):
        read_header(path, CAP)
    for row in ([0.0, 0.0, 0.0, 0.0], [np.nan, 0.0, 0.0, 0.0]):
        raw = nib.Nifti1Image(_volume(), LPS_AFFINE).to_bytes()
        header = nib.Nifti1Header(raw[:348])
        header["srow_y"], header["qform_code"] = row, 0
        path.write_bytes(gzip.compress(header.binaryblock + raw[348:]))
        with pytest.raises(UnreadableNifti, match="not finite or is singular"):
            read_header(path, CAP)


@pytest.mark.parametrize("bad", ["UCSF-PDGM-0004\n", "a/b", "..", "", "x" * 129, " lead"])
def test_patient_ids_are_matched_as_a_whole(bad):
    with pytest.raises(UnsafePatientId):
        validate_patient_id(bad)
    assert validate_patient_id("UCSF-PDGM-0004") == "UCSF-PDGM-0004"
