from __future__ import annotations

import numpy as np
import pytest
from matplotlib.image import imread

from idhhpc.explain.overlay import case_title, save_overlay

N = 32


def _volumes():
    x, y, z = np.meshgrid(*[np.arange(N)] * 3, indexing="ij")
    flair = ((((x - 16) / 12) ** 2 + ((y - 16) / 14) ** 2 + ((z - 16) / 10) ** 2) < 1).astype(np.float32)
    tumor = (((x - 22) ** 2 + (y - 22) ** 2 + (z - 18) ** 2) < 9).astype(np.uint8)
    cam = np.exp(-((x - 20) ** 2 + (y - 20) ** 2 + (z - 17) ** 2) / 30.0).astype(np.float32)
    return flair, cam, tumor


def test_overlay_png_is_written_and_not_blank(tmp_path):
    flair, cam, tumor = _volumes()
    path = save_overlay(tmp_path / "case" / "overlay.png", flair, cam, tumor, "P-001 | true mutant")
    pixels = imread(path)
    assert path.exists() and pixels.ndim == 3
    assert pixels[..., :3].std() > 0.05
    assert not list(path.parent.glob(".*.tmp"))


def test_tumor_row_only_when_a_tumor_exists(tmp_path):
    flair, cam, tumor = _volumes()
    with_tumor = imread(save_overlay(tmp_path / "a.png", flair, cam, tumor, "a"))
    without = imread(save_overlay(tmp_path / "b.png", flair, cam, None, "b"))
    empty = imread(save_overlay(tmp_path / "c.png", flair, cam, np.zeros_like(tumor), "c"))
    assert with_tumor.shape[0] > 1.5 * without.shape[0]
    assert empty.shape == without.shape


def test_mismatched_shapes_are_refused(tmp_path):
    flair, cam, tumor = _volumes()
    with pytest.raises(ValueError, match="shape"):
        save_overlay(tmp_path / "x.png", flair[:-1], cam, tumor, "x")


def test_case_title_names_patient_truth_probability_and_threshold():
    title = case_title("UCSF-PDGM-0004", 1, 0.8312, 0.4, 0, "gradcam")
    for part in ("UCSF-PDGM-0004", "true mutant", "0.831", "0.40", "→ mutant", "gradcam for wildtype"):
        assert part in title
