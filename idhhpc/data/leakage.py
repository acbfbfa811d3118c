"""The leakage guard: find training patients hiding in an external cohort under other names.

BraTS 2021 contains UCSF-PDGM patients (UCSF-PDGM-0004 is BraTS2021_00097), so a "BraTS-derived
external test" of a UCSF-trained model partly scores its own training patients, under other IDs,
other file names, another data type or affine. Names cannot find them; image content can.

Every patient is compared after preprocessing, which already makes the volumes independent of
the file format, the data type, the voxel order and orientation (reoriented to RAS), the voxel
size (cropped and resampled to one cube) and a linear intensity scale (z-scored on the brain).
The fingerprint is the modality channels (never the coordinate channels, which are alike for
everyone), each re-standardised on the brain, zero outside it, averaged down to
``FINGERPRINT_SIDE``³ (robust to a small shift or resampling, and the noise averages out).
Similarity is the cosine of two fingerprints after the training patients' mean fingerprint is
subtracted: phantoms (and atlas-registered cohorts) share one anatomy, which would otherwise
make every pair look alike. A duplicate scores near 1; distinct patients far below
``LEAKAGE_THRESHOLD`` (measured on phantoms: benchmarks/RESULTS.md, "External").

Where the external cohort is BraTS-derived, UCSF-PDGM's metadata column ``BraTS21 ID`` names
the training patients it contains outright (:func:`brats_aliases`).
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from idhhpc.data import ucsf_pdgm
from idhhpc.data.dataset import ShardDataset

FINGERPRINT_SIDE = 8
BRATS_COLUMN = "BraTS21 ID"
"""UCSF-PDGM's metadata column naming each patient's BraTS 2021 case."""
BRATS_CASES_COLUMN = "brats21_id"
"""The optional column of an external cases CSV naming each row's BraTS 2021 case."""


@dataclass(frozen=True)
class Match:
    """An external patient and the most similar training patient."""

    patient_id: str
    training_id: str
    similarity: float


def fingerprint(image: np.ndarray, brain: np.ndarray, n_modalities: int, side: int = FINGERPRINT_SIDE) -> np.ndarray:
    """One patient's image content as a float64 vector (see the module docstring)."""
    channels = np.asarray(image, dtype=np.float64)[:n_modalities]
    region = content_region(channels, brain)
    out = []
    for channel in channels:
        values = channel[region]
        spread = values.std() if values.size else 0.0
        standard = np.where(region, (channel - values.mean()) / spread, 0.0) if spread > 0 else np.zeros_like(channel)
        out.append(_block_mean(standard, side))
    return np.concatenate([c.ravel() for c in out])


def content_region(channels: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """Brain voxels above every channel's floor there. Preprocessing clips each channel at its
    low brain percentile, and a brain mask made from the images (a copy without its mask file)
    also holds background voxels near the brain's surface, which the clip puts on that floor: left
    out, the region no longer depends on which brain mask the copy came with."""
    region = np.asarray(brain) != 0
    for channel in channels:
        inside = channel[region]
        if inside.size:
            region &= channel > inside.min() + 1e-3 * (inside.std() or 1.0)
    return region


def _block_mean(volume: np.ndarray, side: int) -> np.ndarray:
    """``volume`` (a cube) averaged over blocks down to ``side``³ (resampled first when its side is
    not a multiple of ``side``)."""
    factor = max(volume.shape[0] // side, 1)
    if volume.shape[0] != factor * side:
        volume = ndimage.zoom(volume, factor * side / volume.shape[0], order=1)
    return volume.reshape(side, factor, side, factor, side, factor).mean(axis=(1, 3, 5))


def fingerprints(index_path: Path, n_modalities: int, patient_ids: list[str] | None = None) -> dict[str, np.ndarray]:
    """:func:`fingerprint` of every patient (or of ``patient_ids``) of a shard index."""
    dataset = ShardDataset(index_path, patient_ids, with_masks=True)
    try:
        return {item["patient_id"]: fingerprint(item["image"].numpy(), item["brain"].numpy(), n_modalities)
                for item in (dataset[i] for i in range(len(dataset)))}
    finally:
        dataset.close()


def best_matches(external: dict[str, np.ndarray], training: dict[str, np.ndarray]) -> list[Match]:
    """For every external patient, the training patient it resembles most, by centred cosine."""
    if not external or not training:
        return []
    train_ids = list(training)
    train = np.stack([training[p] for p in train_ids])
    mean = train.mean(axis=0)
    a, b = _unit_rows(np.stack(list(external.values())) - mean), _unit_rows(train - mean)
    similarity = a @ b.T
    best = similarity.argmax(axis=1)
    return [Match(pid, train_ids[j], float(similarity[i, j])) for i, (pid, j) in enumerate(zip(external, best))]


def _unit_rows(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.where(norms > 0, norms, 1.0)


def duplicates(matches: list[Match], threshold: float) -> list[Match]:
    return [m for m in matches if m.similarity >= threshold]


def brats_aliases(metadata_csv: Path | None, training_ids: set[str]) -> dict[str, str]:
    """{BraTS 2021 ID: training patient} from UCSF-PDGM's metadata (empty when it has no column)."""
    if metadata_csv is None or not Path(metadata_csv).is_file():
        return {}
    rows = csv.DictReader(io.StringIO(Path(metadata_csv).read_text(encoding="utf-8-sig")))
    aliases = {}
    for row in rows:
        parsed = ucsf_pdgm.parse_id(row.get("ID") or "")
        brats = (row.get(BRATS_COLUMN) or "").strip()
        if parsed and brats and parsed.canonical in training_ids:
            aliases[brats] = parsed.canonical
    return aliases


def external_brats_ids(cases_csv: Path | None) -> dict[str, str]:
    """{patient: BraTS 2021 ID} from an external cases CSV's ``brats21_id`` column, if it has one."""
    if cases_csv is None or not Path(cases_csv).is_file():
        return {}
    rows = csv.DictReader(io.StringIO(Path(cases_csv).read_text(encoding="utf-8-sig")))
    return {row["patient_id"].strip(): row[BRATS_CASES_COLUMN].strip() for row in rows
            if row.get(BRATS_CASES_COLUMN) and row.get("patient_id")}


def named_duplicates(patient_ids: list[str], aliases: dict[str, str], brats_ids: dict[str, str]) -> dict[str, str]:
    """{external patient: training patient} for patients whose ID, or whose ``brats21_id``, is the
    BraTS 2021 ID of a training patient."""
    found = {}
    for pid in patient_ids:
        for name in (pid, brats_ids.get(pid, "")):
            if name in aliases:
                found[pid] = aliases[name]
    return found


@dataclass
class Screening:
    """The guard's verdict on an external cohort."""

    kept: list[str]
    duplicates: list[tuple[str, str, float]]
    """(external patient, internal patient, similarity; NaN where the BraTS ID named it)."""
    compared_with: int
    threshold: float
    closest_kept: float

    def quarantine_rows(self) -> list[tuple[str, str]]:
        rows = []
        for pid, match, similarity in self.duplicates:
            how = (f"image similarity {similarity:.3f} >= {self.threshold:.2f}" if math.isfinite(similarity)
                   else f"its BraTS 2021 ID is {match}'s in the UCSF-PDGM metadata ({BRATS_COLUMN})")
            rows.append((pid, f"duplicate of internal patient {match}: {how}; excluded from the external test"))
        return rows


def screen(training_index: Path, external_index: Path, n_modalities: int, threshold: float,
           aliases: dict[str, str] | None = None, brats_ids: dict[str, str] | None = None) -> Screening:
    """Compare every external patient with every internal one (train, validation and test):
    image content (:func:`best_matches`) and, where given, BraTS 2021 IDs (:func:`named_duplicates`)."""
    external, training = fingerprints(external_index, n_modalities), fingerprints(training_index, n_modalities)
    matches = {m.patient_id: m for m in best_matches(external, training)}
    found = {pid: (m.training_id, m.similarity) for pid, m in matches.items() if m.similarity >= threshold}
    for pid, match in named_duplicates(list(external), aliases or {}, brats_ids or {}).items():
        found.setdefault(pid, (match, math.nan))
    kept = [pid for pid in external if pid not in found]
    closest = max((matches[pid].similarity for pid in kept if pid in matches), default=math.nan)
    return Screening(kept, [(pid, *found[pid]) for pid in external if pid in found], len(training), threshold, closest)
