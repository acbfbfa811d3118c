"""``report.html``: the report MLflow's artifact view can show, figures embedded, same tables as report.md."""

import base64
import re

import numpy as np

from idhhpc.evaluate.outputs import evaluate_predictions
from idhhpc.evaluate.reference import STUDY_REFERENCE

HISTORY = [{"epoch": e, "train/loss": 1 / (e + 1), "val/loss": 1.1 / (e + 1), "val/auc": 0.6 + 0.1 * e, "lr": 1e-3}
           for e in range(3)]


def _evaluate(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.array([0] * 20 + [1] * 10)
    probs = np.clip(0.3 * labels + rng.uniform(0, 0.7, labels.size), 0, 1)
    ids = [f"UCSF-PDGM-{i:04d}" for i in range(labels.size)]
    evaluate_predictions(labels, probs, 0.5, ids, tmp_path, history=HISTORY, n_resamples=50)
    return (tmp_path / "report.html").read_text()


def test_every_figure_is_embedded_and_nothing_is_linked(tmp_path):
    page = _evaluate(tmp_path)
    sources = re.findall(r"<img [^>]*src='([^']+)'", page)
    figures = sorted(p.name for p in tmp_path.glob("*.png"))
    assert len(sources) == len(figures) >= 5
    assert all(src.startswith("data:image/png;base64,") for src in sources)
    embedded = {base64.b64decode(src.split(",", 1)[1]) for src in sources}
    assert embedded == {(tmp_path / name).read_bytes() for name in figures}


def test_tables_match_the_markdown_report(tmp_path):
    page = _evaluate(tmp_path)
    markdown = (tmp_path / "report.md").read_text()
    for key, reference in STUDY_REFERENCE.items():
        assert f"<td>{key}</td>" in page and f"| {key} |" in markdown
        assert f"<td>{reference:.3f}</td>" in page
    md_cells = re.findall(r"^\| (auc|accuracy|f1_weighted) \| ([^|]+) \| ([^|]*) \|$", markdown, re.M)
    html_cells = re.findall(r"<tr><td>(auc|accuracy|f1_weighted)</td><td>([^<]+)</td><td>([^<]*)</td></tr>", page)
    assert md_cells and [tuple(c.strip() for c in row) for row in md_cells] == html_cells
