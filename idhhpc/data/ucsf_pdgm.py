"""The quirks of UCSF-PDGM on disk, in one place.

IDs are 3-digit in the metadata CSV (``UCSF-PDGM-004``) and 4-digit in folder names
(``UCSF-PDGM-0004_nifti``); follow-up scans (``_FU016d``) repeat an earlier patient; the IDH
column has many spellings; the contrast-enhanced T1 is ``T1c`` in some copies and ``T1gad`` in
others. ``Final pathologic diagnosis`` contains the IDH status and is never read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from idhhpc.constants import MODALITY_ALIASES

METADATA_GLOB = "UCSF-PDGM-metadata*.csv"
_ID = re.compile(r"^(?P<prefix>UCSF-PDGM)-(?P<number>\d{1,4})(?P<followup>_FU\w*)?$", re.IGNORECASE)
_FOLDER = re.compile(r"^(?P<id>UCSF-PDGM-\d{1,4}(?:_FU\w*?)?)_nifti$", re.IGNORECASE)

_UNLABELED = {"", "unknown", "nan", "na", "n/a", "n.a.", "none", "not available", "not tested", "not done",
              "not assessed", "nos", "equivocal", "indeterminate", "pending", "?"}
_WILDTYPE_WORDS = re.compile(r"wild[\s_-]*type|\bwt\b|negative|\bneg\b")
_NEGATION_WORDS = re.compile(r"\bnot\b|\bnon\b|\bno\b|\bwithout\b|\babsent\b")
_MUTANT_WORDS = re.compile(r"mutant|mutated|mutation|\bmut\b|positive|\bpos\b")
_VARIANTS = re.compile(r"\b(?:p\.)?r1(?:32|72)[a-z]*\b")
"""Protein changes such as ``p.R132H`` or ``R172K``: a named variant always means mutant."""

@dataclass(frozen=True)
class ParsedId:
    """A UCSF-PDGM identifier reduced to its canonical 4-digit form."""

    canonical: str
    followup: str | None

    @property
    def is_followup(self) -> bool:
        return self.followup is not None


def parse_id(raw: str) -> ParsedId | None:
    """``UCSF-PDGM-004`` and ``UCSF-PDGM-0004`` both become ``UCSF-PDGM-0004``; None if not an ID."""
    match = _ID.match(raw.strip())
    if match is None:
        return None
    canonical = f"UCSF-PDGM-{int(match['number']):04d}"
    followup = match["followup"].lstrip("_") if match["followup"] else None
    return ParsedId(canonical, followup)


def folder_id(folder: Path) -> str | None:
    """The raw patient ID a ``*_nifti`` folder belongs to, or None for other folders."""
    match = _FOLDER.match(folder.name)
    return match["id"] if match else None


def parse_idh(value: object) -> tuple[int | None, str | None]:
    """Map an IDH cell to (label, problem): 0 wildtype, 1 mutant, None with the reason otherwise.

    Wildtype wording (``wildtype``, ``WT``, ``negative``) and negations (``not mutated``,
    ``non-mutant``, ``no mutation``) read wildtype; mutant wording (``mutated``, ``positive``) and
    named variants (``IDH1 p.R132H``) read mutant. A gene name alone says nothing (``IDH1
    wildtype`` is wildtype), and a value with both kinds of wording is refused, not guessed.
    """
    text = "" if value is None else str(value).strip()
    lowered = " ".join(text.lower().split())
    if lowered in _UNLABELED:
        return None, f"unlabeled IDH status ({text or 'empty'!s})"
    if lowered in ("0", "1"):
        return int(lowered), None
    negated = bool(_NEGATION_WORDS.search(lowered))
    wildtype = bool(_WILDTYPE_WORDS.search(lowered)) or negated
    mutant = bool(_VARIANTS.search(lowered)) or (bool(_MUTANT_WORDS.search(lowered)) and not negated)
    if negated and _WILDTYPE_WORDS.search(lowered):
        mutant = True  # "not wildtype" negates the wildtype wording itself: refuse rather than guess
    if wildtype and mutant:
        return None, f"contradictory IDH value {text!r}: it has both wildtype and mutant wording"
    if wildtype or mutant:
        return int(mutant), None
    return None, f"unrecognised IDH value {text!r}"


def find_metadata_csv(root: Path) -> Path:
    """The newest ``UCSF-PDGM-metadata*.csv`` in the dataset folder or its parent."""
    candidates = sorted(root.glob(METADATA_GLOB)) or sorted(root.parent.glob(METADATA_GLOB))
    if not candidates:
        raise FileNotFoundError(f"{root}: no UCSF-PDGM-metadata*.csv found here or in its parent; set data.metadata_csv")
    return max(candidates, key=_version_key)


def _version_key(path: Path) -> tuple[int, str]:
    match = re.search(r"_v(\d+)", path.stem)
    return (int(match.group(1)) if match else 0, path.name)


def find_modality(folder: Path, modality: str, bias_corrected: bool) -> tuple[Path | None, str | None]:
    """The one file of ``modality`` in a patient folder, as (path, problem).

    UCSF-PDGM names files ``<id>_<modality>.nii.gz``; a folder of users' own files named just by
    modality (``T1gad.nii.gz``) is accepted too.
    """
    suffix = "_bias" if bias_corrected else ""
    aliases = MODALITY_ALIASES[modality]
    wanted = {f"_{alias}{suffix}".lower() for alias in aliases}
    matches = [p for p in sorted(folder.iterdir()) if p.is_file() and _stem(p).lower().endswith(tuple(wanted))]
    if not matches:
        matches = _named_exactly(folder, tuple(f"{alias}{suffix}" for alias in aliases))
    if not matches:
        names = "/".join(f"*{w}.nii.gz" for w in sorted(wanted))
        return None, f"missing {modality}: no {names} in {folder}"
    if len(matches) > 1:
        return None, f"ambiguous {modality}: {', '.join(p.name for p in matches)} in {folder}"
    return matches[0], None


def find_optional(folder: Path, name: str) -> Path | None:
    """The one ``*_<name>.nii.gz`` (or ``<name>.nii.gz``) in ``folder``, e.g. a tumour segmentation."""
    matches = [p for p in sorted(folder.iterdir()) if p.is_file() and _stem(p).lower().endswith(f"_{name}".lower())]
    matches = matches or _named_exactly(folder, (name,))
    return matches[0] if len(matches) == 1 else None


def _named_exactly(folder: Path, stems: tuple[str, ...]) -> list[Path]:
    wanted = {stem.lower() for stem in stems}
    return [p for p in sorted(folder.iterdir()) if p.is_file() and _stem(p).lower() in wanted]


def _stem(path: Path) -> str:
    name = path.name
    for ext in (".nii.gz", ".nii"):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return ""

