from __future__ import annotations

import math

import numpy as np
import pytest

from idhhpc.explain.stats import (
    STATISTIC_KEYS,
    cam_statistics,
    summarise_cam_statistics,
)

N = 20


def _brain_and_tumor():
    brain = np.zeros((N, N, N), np.uint8)
    brain[2:18, 2:18, 2:18] = 1
    tumor = np.zeros((N, N, N), np.uint8)
    tumor[8:12, 8:12, 8:10] = 2
    tumor[8:12, 8:12, 10:12] = 4
    tumor[9:11, 9:11, 9:11] = 1
    return brain, tumor


def test_cam_equal_to_tumor_gives_full_energy_and_a_hit():
    brain, tumor = _brain_and_tumor()
    cam = (tumor > 0).astype(np.float32)
    cam[9, 9, 9] = 1.5
    stats = cam_statistics(cam, tumor, brain, dilation=0)
    assert stats["energy_in_tumor"] == pytest.approx(1.0)
    assert stats["pointing_game"] == 1.0
    total = cam.sum()
    assert stats["energy_in_necrosis"] == pytest.approx(cam[tumor == 1].sum() / total)
    assert stats["energy_in_edema"] == pytest.approx(cam[tumor == 2].sum() / total)
    assert stats["energy_in_enhancing"] == pytest.approx(cam[tumor == 4].sum() / total)
    assert sum(stats[f"energy_in_{r}"] for r in ("necrosis", "edema", "enhancing")) == pytest.approx(1.0)


def test_cam_outside_tumor_gives_zero():
    brain, tumor = _brain_and_tumor()
    cam = np.zeros((N, N, N), np.float32)
    cam[3:6, 3:6, 3:6] = 1.0
    cam[4, 4, 4] = 2.0
    stats = cam_statistics(cam, tumor, brain, dilation=2)
    assert stats["energy_in_tumor"] == 0.0
    assert stats["pointing_game"] == 0.0


def test_pointing_game_counts_the_dilated_margin():
    brain, tumor = _brain_and_tumor()
    cam = np.zeros((N, N, N), np.float32)
    cam[13, 10, 10] = 1.0
    assert cam_statistics(cam, tumor, brain, dilation=1)["pointing_game"] == 0.0
    assert cam_statistics(cam, tumor, brain, dilation=2)["pointing_game"] == 1.0


def test_chance_levels():
    brain, tumor = _brain_and_tumor()
    stats = cam_statistics(np.random.default_rng(0).random((N, N, N)), tumor, brain, dilation=1)
    assert stats["chance_energy_in_tumor"] == pytest.approx(64 / 16**3)
    dilated = 4 * 4 * 4 + 6 * 4 * 4  # a 4³ box grown by one voxel along the six faces
    assert stats["chance_pointing_game"] == pytest.approx(dilated / 16**3)
    uniform = cam_statistics(brain.astype(np.float32), tumor, brain)
    assert uniform["energy_in_tumor"] == pytest.approx(uniform["chance_energy_in_tumor"])


def test_no_tumor_and_zero_cam_are_nan_not_errors():
    brain, tumor = _brain_and_tumor()
    empty = cam_statistics(np.ones((N, N, N)), np.zeros_like(tumor), brain)
    assert set(empty) == set(STATISTIC_KEYS) and all(math.isnan(v) for v in empty.values())
    zero = cam_statistics(np.zeros((N, N, N)), tumor, brain)
    assert math.isnan(zero["energy_in_tumor"]) and math.isnan(zero["pointing_game"])
    assert zero["chance_energy_in_tumor"] > 0


def test_shape_mismatch_is_refused():
    brain, tumor = _brain_and_tumor()
    with pytest.raises(ValueError, match="one shape"):
        cam_statistics(np.zeros((N, N, N - 1)), tumor, brain)


def _row(label, correct, energy, pointing):
    row = dict.fromkeys(STATISTIC_KEYS, 0.1)
    return {**row, "label": label, "correct": correct, "energy_in_tumor": energy, "pointing_game": pointing}


def test_summary_per_class_and_correctness():
    rows = [_row(1, True, 0.8, 1.0), _row(1, False, 0.4, 0.0), _row(0, True, 0.2, 1.0),
            _row(0, True, math.nan, math.nan)]
    summary = summarise_cam_statistics(rows)
    assert summary["cam/energy_in_tumor"] == pytest.approx((0.8 + 0.4 + 0.2) / 3)
    assert summary["cam/energy_in_tumor_mutant"] == pytest.approx(0.6)
    assert summary["cam/energy_in_tumor_wildtype"] == pytest.approx(0.2)
    assert summary["cam/pointing_game_correct"] == pytest.approx(1.0)
    assert summary["cam/pointing_game_wrong"] == pytest.approx(0.0)
    assert summary["cam/chance_energy_in_tumor"] == pytest.approx(0.1)
    assert summary["cam/n_cases_wildtype"] == 2 and summary["cam/n_cases_wrong"] == 1
    assert all(math.isfinite(v) for v in summary.values())


def test_summary_leaves_out_groups_without_values():
    summary = summarise_cam_statistics([_row(1, True, 0.5, 1.0)])
    assert "cam/energy_in_tumor_wildtype" not in summary and "cam/pointing_game_wrong" not in summary
    assert summary["cam/n_cases_wrong"] == 0
