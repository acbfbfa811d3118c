from __future__ import annotations

import pytest

from idhhpc.explain.gallery import confidence, write_gallery
from idhhpc.explain.stats import STATISTIC_KEYS

PNG = b"\x89PNG\r\n\x1a\n" + b"0" * 16


def _cases(tmp_path):
    specs = [("P-low", 1, 0.55, 1), ("P-high", 0, 0.02, 0), ("P-mid", 1, 0.2, 0)]
    cases = []
    for patient_id, label, prob, predicted in specs:
        overlay = tmp_path / patient_id / "overlay.png"
        overlay.parent.mkdir(parents=True)
        overlay.write_bytes(PNG)
        stats = {**dict.fromkeys(STATISTIC_KEYS, 0.25), "chance_energy_in_tumor": 0.05}
        cases.append({"patient_id": patient_id, "label": label, "prob_mutant": prob, "predicted": predicted,
                      "correct": label == predicted, "overlay": overlay, "statistics": stats})
    return cases


def test_confidence_is_the_probability_of_the_predicted_class():
    assert confidence({"prob_mutant": 0.9, "predicted": 1}) == pytest.approx(0.9)
    assert confidence({"prob_mutant": 0.1, "predicted": 0}) == pytest.approx(0.9)


def test_markdown_lists_cases_by_confidence_with_relative_images(tmp_path):
    text = write_gallery(_cases(tmp_path), tmp_path / "gallery.md").read_text()
    order = [text.index(f"### {rank}. {pid}") for rank, pid in enumerate(("P-high", "P-mid", "P-low"), 1)]
    assert order == sorted(order)
    assert "](P-high/overlay.png)" in text
    assert "0.250 (chance 0.050)" in text
    assert text.index("summary") < text.index("### 1.")


def test_html_is_self_contained_by_default(tmp_path):
    cases = _cases(tmp_path)
    embedded = write_gallery(cases, tmp_path / "gallery.html").read_text()
    assert embedded.count("data:image/png;base64,") == 3
    assert embedded.index("P-high</h3>") < embedded.index("P-mid</h3>") < embedded.index("P-low</h3>")
    linked = write_gallery(cases, tmp_path / "linked.html", embed_images=False).read_text()
    assert "src='P-mid/overlay.png'" in linked and "base64" not in linked


def test_unknown_suffix_is_refused(tmp_path):
    with pytest.raises(ValueError, match="gallery.txt"):
        write_gallery(_cases(tmp_path), tmp_path / "gallery.txt")
