import dataclasses
import gzip

import nibabel as nib
import numpy as np
import pytest

from idhhpc.config import PreprocessConfig
from idhhpc.data.cases import CaseRejected
from idhhpc.data.geometry import output_affine, to_native
from idhhpc.data.preprocess import preprocess_case, settings_hash
from tests.support.synthetic_cases import LPS_AFFINE, RAS_AFFINE, write_case

SETTINGS = PreprocessConfig(size=24)
FLIPPED_AFFINE = np.array([[0, 0, 1.0, -15], [-1.0, 0, 0, 20], [0, 1.2, 0, -20], [0, 0, 0, 1]])


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def test_output_shapes_dtypes_and_normalization(tmp_path):
    result = preprocess_case(write_case(tmp_path), SETTINGS)
    assert result.image.shape == (4, 24, 24, 24) and result.image.dtype == np.float16
    assert result.brain.dtype == np.uint8 and result.tumor.dtype == np.uint8
    assert set(np.unique(result.tumor)) == {0, 1, 2, 4}
    inside = result.brain.astype(bool)
    assert np.all(result.image[:, ~inside] == 0)
    for channel in result.image.astype(np.float32):
        assert abs(channel[inside].mean()) < 0.05 and abs(channel[inside].std() - 1) < 0.05
    assert result.warnings == []


@pytest.mark.parametrize("affine", [RAS_AFFINE, LPS_AFFINE, FLIPPED_AFFINE], ids=["ras", "lps", "permuted"])
def test_tumor_maps_back_to_native(tmp_path, affine):
    case = write_case(tmp_path, affine=affine)
    result = preprocess_case(case, PreprocessConfig(size=32))
    native = to_native((result.tumor > 0).astype(np.uint8), result.geometry, order=0)
    reference = nib.load(case.tumor_mask)
    assert native.shape == reference.shape
    np.testing.assert_allclose(native.affine, reference.affine)
    assert dice(np.asarray(native.dataobj) > 0, reference.get_fdata() > 0) > 0.9


def test_output_affine_places_tumor_centre_in_world(tmp_path):
    case = write_case(tmp_path, affine=LPS_AFFINE)
    result = preprocess_case(case, PreprocessConfig(size=32))
    tumor_native = nib.load(case.tumor_mask)
    native_centre = np.argwhere(tumor_native.get_fdata() > 0).mean(0)
    output_centre = np.argwhere(result.tumor > 0).mean(0)
    world_native = nib.affines.apply_affine(tumor_native.affine, native_centre)
    world_output = nib.affines.apply_affine(output_affine(result.geometry), output_centre)
    assert np.linalg.norm(world_native - world_output) < 1.0


def test_brain_mask_from_images_when_no_file(tmp_path):
    with_file = preprocess_case(write_case(tmp_path / "a"), SETTINGS)
    without = preprocess_case(write_case(tmp_path / "b", with_brain=False), SETTINGS)
    assert dice(with_file.brain > 0, without.brain > 0) > 0.95


def test_settings_hash_is_stable_and_sensitive():
    modalities = ["FLAIR", "T1", "T1c", "T2"]
    assert settings_hash(SETTINGS, modalities) == settings_hash(PreprocessConfig(size=24), modalities)
    assert settings_hash(SETTINGS, modalities) != settings_hash(PreprocessConfig(size=32), modalities)
    assert settings_hash(SETTINGS, modalities) != settings_hash(SETTINGS, modalities[::-1])


def _rewrite(path, data, affine=RAS_AFFINE):
    nib.save(nib.Nifti1Image(data, affine), path)


def _truncate(path):
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])


def _garbage(path):
    path.write_bytes(gzip.compress(b"not a nifti file at all" * 20))


def _nan(path):
    data = nib.load(path).get_fdata().astype(np.float32)
    data[10, 10, 10] = np.nan
    data[11, 10, 10] = np.inf
    _rewrite(path, data)


BAD_IMAGE_EDITS = {
    "truncated": (_truncate, "unreadable"),
    "corrupt": (_garbage, "unreadable"),
    "missing": (lambda p: p.unlink(), "missing file"),
    "four_d": (lambda p: _rewrite(p, np.zeros((40, 36, 30, 2), np.float32)), "4-D"),
    "shape": (lambda p: _rewrite(p, np.ones((40, 36, 31), np.float32)), "shape mismatch"),
    "affine": (lambda p: _rewrite(p, nib.load(p).get_fdata().astype(np.float32), LPS_AFFINE), "affine mismatch"),
    "all_zero": (lambda p: _rewrite(p, np.zeros((40, 36, 30), np.float32)), "constant"),
    "constant": (lambda p: _rewrite(p, np.full((40, 36, 30), 7, np.float32)), "constant"),
}


@pytest.mark.parametrize("edit", list(BAD_IMAGE_EDITS))
def test_bad_image_is_rejected_naming_the_file(tmp_path, edit):
    case = write_case(tmp_path)
    modify, expected = BAD_IMAGE_EDITS[edit]
    modify(case.images["T1c"])
    with pytest.raises(CaseRejected) as caught:
        preprocess_case(case, SETTINGS)
    assert expected in caught.value.reason and "T1c" in caught.value.reason
    assert caught.value.patient_id == case.patient_id and "\n" not in caught.value.reason


def test_singleton_fourth_dimension_is_squeezed(tmp_path):
    case = write_case(tmp_path)
    data = nib.load(case.images["T2"]).get_fdata().astype(np.float32)
    _rewrite(case.images["T2"], data[..., None])
    assert preprocess_case(case, SETTINGS).image.shape == (4, 24, 24, 24)


@pytest.mark.parametrize("mask,values", [("tumor_mask", 3), ("brain_mask", 2)])
def test_bad_segmentation_labels_are_rejected(tmp_path, mask, values):
    case = write_case(tmp_path)
    path = getattr(case, mask)
    data = np.asarray(nib.load(path).dataobj).copy()
    data[20, 18, 15] = values
    _rewrite(path, data)
    with pytest.raises(CaseRejected, match="labels outside") as caught:
        preprocess_case(case, SETTINGS)
    assert path.name in caught.value.reason


def test_empty_brain_mask_is_rejected(tmp_path):
    case = write_case(tmp_path)
    _rewrite(case.brain_mask, np.zeros((40, 36, 30), np.uint8))
    with pytest.raises(CaseRejected, match="empty brain mask"):
        preprocess_case(case, SETTINGS)


def test_nan_repaired_and_reported_or_quarantined(tmp_path):
    case = write_case(tmp_path)
    _nan(case.images["FLAIR"])
    repaired = preprocess_case(case, SETTINGS)
    assert np.isfinite(repaired.image.astype(np.float32)).all()
    assert len(repaired.warnings) == 1 and "2 NaN/Inf" in repaired.warnings[0] and "FLAIR" in repaired.warnings[0]
    with pytest.raises(CaseRejected, match="NaN/Inf") as caught:
        preprocess_case(case, SETTINGS.model_copy(update={"nan_policy": "quarantine"}))
    assert "FLAIR" in caught.value.reason


def test_nan_repair_ignores_nan_background_and_stops_at_its_limit(tmp_path):
    case = write_case(tmp_path, with_brain=False)  # the brain comes from the images
    flair = nib.load(case.images["FLAIR"]).get_fdata().astype(np.float32)
    background = np.where(flair == 0, np.nan, flair)
    _rewrite(case.images["FLAIR"], background)
    repaired = preprocess_case(case, SETTINGS)
    assert "repaired" in repaired.warnings[0] and np.isfinite(repaired.image.astype(np.float32)).all()
    inside = np.flatnonzero(flair)
    damaged = background.copy()
    damaged.reshape(-1)[inside[: len(inside) // 20]] = np.nan  # 5 % of the brain
    _rewrite(case.images["FLAIR"], damaged)
    with pytest.raises(CaseRejected, match=r"5\.0% of the brain, more than preprocess.nan_repair_limit"):
        preprocess_case(case, SETTINGS)
    assert preprocess_case(case, SETTINGS.model_copy(update={"nan_repair_limit": 0.06})).warnings


TUMOR_ROI = PreprocessConfig(size=24, roi="tumor", roi_margin=0.25)


@pytest.mark.parametrize("affine", [RAS_AFFINE, LPS_AFFINE, FLIPPED_AFFINE], ids=["ras", "lps", "permuted"])
def test_tumor_roi_centres_the_cube_on_the_tumor_and_maps_back(tmp_path, affine):
    case = write_case(tmp_path, affine=affine)
    brain_roi, tumor_roi = preprocess_case(case, SETTINGS), preprocess_case(case, TUMOR_ROI)
    assert tumor_roi.image.shape == (4, 24, 24, 24) and tumor_roi.image.dtype == np.float16
    assert (tumor_roi.tumor > 0).mean() > 5 * (brain_roi.tumor > 0).mean()  # the tumour fills the cube
    centre = np.argwhere(tumor_roi.tumor > 0).mean(0)
    assert np.all(np.abs(centre - 11.5) < 2.0)
    native = to_native((tumor_roi.tumor > 0).astype(np.uint8), tumor_roi.geometry, order=0)
    reference = nib.load(case.tumor_mask)
    np.testing.assert_allclose(native.affine, reference.affine)
    assert dice(np.asarray(native.dataobj) > 0, reference.get_fdata() > 0) > 0.8


def test_tumor_roi_keeps_the_whole_brain_normalisation(tmp_path):
    case = write_case(tmp_path)
    brain_roi, tumor_roi = preprocess_case(case, SETTINGS), preprocess_case(case, TUMOR_ROI)
    for channel in range(4):  # the tumour's contrast to the brain survives the tighter crop
        inside_brain = brain_roi.image[channel][brain_roi.tumor > 0].astype(np.float32).mean()
        inside_roi = tumor_roi.image[channel][tumor_roi.tumor > 0].astype(np.float32).mean()
        assert inside_roi == pytest.approx(inside_brain, abs=0.35)


def test_tumor_roi_without_a_segmentation_is_refused(tmp_path):
    with pytest.raises(CaseRejected, match="roi 'tumor' needs a non-empty tumor segmentation"):
        preprocess_case(write_case(tmp_path, with_tumor=False), TUMOR_ROI)


def test_coordinate_channels_place_each_voxel_in_the_brain_box(tmp_path):
    case = write_case(tmp_path)
    brain = preprocess_case(case, PreprocessConfig(size=24, coordinates=True))
    tumor = preprocess_case(case, TUMOR_ROI.model_copy(update={"coordinates": True}))
    assert brain.image.shape == tumor.image.shape == (4 + 3, 24, 24, 24)
    plain = preprocess_case(case, SETTINGS)
    np.testing.assert_array_equal(brain.image[:4], plain.image)  # the modalities are untouched
    ras = brain.image[4:].astype(np.float32)
    for axis in range(3):  # the brain box spans about -1..1 along every axis of the brain cube
        ramp = np.moveaxis(ras[axis], axis, 0)
        assert np.all(np.diff(ramp[:, 0, 0]) > 0) and ramp.min() < -0.5 and ramp.max() > 0.5
    centre = tumor.image[4:].astype(np.float32)[:, 12, 12, 12]
    inside = brain.image[4:].astype(np.float32)[:, *np.round(np.argwhere(brain.tumor > 0).mean(0)).astype(int)]
    assert np.allclose(centre, inside, atol=0.15)  # the tumour cube's centre sits where the tumour is


@pytest.mark.parametrize("affine", [RAS_AFFINE, FLIPPED_AFFINE], ids=["ras", "permuted"])
def test_a_locator_that_finds_the_tumour_gives_the_expert_crop(tmp_path, affine):
    """Mask-free preprocessing: the locator sees the whole-brain cube, its mask goes back to the
    native grid and chooses the crop; a perfect locator (the expert mask at cube resolution)
    gives the cube the expert mask gives, up to the cube's voxel."""
    case = write_case(tmp_path, affine=affine)
    settings = TUMOR_ROI.model_copy(update={"locator": True})
    expert = preprocess_case(case, settings)
    assert expert.locator_image.shape == (4, 24, 24, 24) and expert.locator_tumor.any()
    without_mask = dataclasses.replace(case, tumor_mask=None)
    seen = []
    located = preprocess_case(without_mask, settings, locate=lambda whole: seen.append(whole) or expert.locator_tumor)
    np.testing.assert_array_equal(seen[0], expert.locator_image)
    assert located.tumor is None and located.located is not None
    assert dice(located.located > 0, expert.tumor > 0) > 0.75
    assert abs(int(located.geometry["cube_side"]) - int(expert.geometry["cube_side"])) <= 0.2 * int(expert.geometry["cube_side"])


def test_a_locator_that_finds_nothing_rejects_the_patient(tmp_path):
    case = dataclasses.replace(write_case(tmp_path), tumor_mask=None)
    with pytest.raises(CaseRejected, match="locator found no tumour"):
        preprocess_case(case, TUMOR_ROI, locate=lambda whole: np.zeros(whole.shape[1:], np.uint8))
