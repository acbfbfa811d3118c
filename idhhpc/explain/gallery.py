"""A one-page gallery of explained test cases, most confident prediction first.

Two renderings of the same content, picked by the file suffix:

- ``.md`` links overlays by relative path: renders in a browser-side Markdown viewer, an IDE or
  a Git host, next to the ``<patient_id>/`` folders.
- ``.html`` is one self-contained file: MLflow's artifact viewer shows HTML in a sandboxed
  ``srcdoc`` frame where relative links do not resolve, so images are embedded as data URIs
  when ``embed_images`` is true (the default) and linked relatively otherwise.
"""

from __future__ import annotations

import base64
import html
import os
from pathlib import Path
from typing import Mapping, Sequence

from idhhpc.atomic import atomic_write_text
from idhhpc.constants import CLASS_NAMES, TUMOR_SUBREGIONS
from idhhpc.explain.stats import summarise_cam_statistics

_SUMMARY_ROWS = (
    ("energy in tumor", "energy_in_tumor", "chance_energy_in_tumor"),
    *((f"energy in {name}", f"energy_in_{name}", f"chance_energy_in_{name}") for name in TUMOR_SUBREGIONS),
    ("pointing game", "pointing_game", "chance_pointing_game"),
)
_GROUPS = (("all", ""), ("wildtype", "_wildtype"), ("mutant", "_mutant"), ("correct", "_correct"), ("wrong", "_wrong"))


def write_gallery(cases: Sequence[Mapping], out_path: str | os.PathLike, *, embed_images: bool = True,
                  title: str = "Grad-CAM gallery") -> Path:
    """Write the gallery for ``cases`` and return its path.

    Each case holds ``patient_id``, ``label`` (0/1 or None), ``prob_mutant``, ``predicted``,
    ``correct``, ``overlay`` (PNG path) and ``statistics`` (a :func:`cam_statistics` dict).
    """
    out_path = Path(out_path)
    ordered = sorted(cases, key=confidence, reverse=True)
    summary = summarise_cam_statistics(
        {**c["statistics"], "label": c["label"], "correct": c["correct"]} for c in ordered if c["label"] is not None)
    if out_path.suffix == ".md":
        text = _markdown(ordered, summary, out_path.parent, title)
    elif out_path.suffix in (".html", ".htm"):
        text = _html(ordered, summary, out_path.parent, title, embed_images)
    else:
        raise ValueError(f"gallery path must end in .md or .html: {out_path}")
    atomic_write_text(out_path, text)
    return out_path


def confidence(case: Mapping) -> float:
    """Probability the model gave to the class it predicted."""
    prob = float(case["prob_mutant"])
    return prob if int(case["predicted"]) == 1 else 1.0 - prob


def _summary_cells(summary: Mapping[str, float]) -> list[list[str]]:
    table = [["measure", *(f"{name} (n={summary.get(f'cam/n_cases{sfx}', 0):.0f})" for name, sfx in _GROUPS)]]
    for label, key, chance_key in _SUMMARY_ROWS:
        cells = [label]
        for _, suffix in _GROUPS:
            chance = _fmt(summary.get(f"cam/{chance_key}{suffix}"))
            cells.append(f"{_fmt(summary.get(f'cam/{key}{suffix}'))} (chance {chance})")
        table.append(cells)
    return table


def _case_cells(rank: int, case: Mapping) -> list[str]:
    stats = case["statistics"]
    return [str(rank), str(case["patient_id"]), _class(case["label"]), f"{float(case['prob_mutant']):.3f}",
            _class(case["predicted"]), "yes" if case["correct"] else "NO",
            f"{_fmt(stats.get('energy_in_tumor'))} (chance {_fmt(stats.get('chance_energy_in_tumor'))})",
            f"{_fmt(stats.get('pointing_game'))} (chance {_fmt(stats.get('chance_pointing_game'))})"]


_CASE_HEADER = ["#", "patient", "true", "P(mutant)", "predicted", "correct", "energy in tumor", "pointing game"]


def _markdown(cases: Sequence[Mapping], summary: Mapping, base: Path, title: str) -> str:
    lines = [f"# {title}", "", "## CAM-in-tumor summary (mean; chance level in brackets)", ""]
    lines += _markdown_table(_summary_cells(summary))
    lines += ["", "## Cases, most confident first", ""]
    lines += _markdown_table([_CASE_HEADER, *(_case_cells(i, c) for i, c in enumerate(cases, 1))])
    for rank, case in enumerate(cases, 1):
        image = _relative(case["overlay"], base)
        lines += ["", f"### {rank}. {case['patient_id']}", "", f"![{case['patient_id']}]({image})"]
    return "\n".join(lines) + "\n"


def _markdown_table(rows: list[list[str]]) -> list[str]:
    header, *body = rows
    line = lambda cells: "| " + " | ".join(cells) + " |"  # noqa: E731
    return [line(header), "|" + "---|" * len(header), *(line(row) for row in body)]


def _html(cases: Sequence[Mapping], summary: Mapping, base: Path, title: str, embed: bool) -> str:
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             "<style>body{font-family:sans-serif;margin:1em}table{border-collapse:collapse}"
             "td,th{border:1px solid #bbb;padding:3px 6px}.wrong{background:#fdd}img{max-width:100%}</style>",
             f"</head><body><h1>{html.escape(title)}</h1>",
             "<h2>CAM-in-tumor summary (mean; chance level in brackets)</h2>",
             _html_table(_summary_cells(summary)), "<h2>Cases, most confident first</h2>",
             _html_table([_CASE_HEADER, *(_case_cells(i, c) for i, c in enumerate(cases, 1))])]
    for rank, case in enumerate(cases, 1):
        source = _data_uri(Path(case["overlay"])) if embed else html.escape(_relative(case["overlay"], base))
        css = "" if case["correct"] else " class='wrong'"
        parts.append(f"<h3{css}>{rank}. {html.escape(str(case['patient_id']))}</h3><img src='{source}'>")
    return "\n".join(parts) + "\n</body></html>\n"


def _html_table(rows: list[list[str]]) -> str:
    header, *body = rows
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    cells = ("".join(f"<td>{html.escape(c)}</td>" for c in row) for row in body)
    return f"<table><tr>{head}</tr>" + "".join(f"<tr>{row}</tr>" for row in cells) + "</table>"


def _data_uri(png: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode("ascii")


def _relative(path: str | os.PathLike, base: Path) -> str:
    return Path(os.path.relpath(Path(path).resolve(), base.resolve())).as_posix()


def _class(value: int | None) -> str:
    return "unknown" if value is None else CLASS_NAMES[int(value)]


def _fmt(value: float | None) -> str:
    return "–" if value is None or value != value else f"{value:.3f}"
