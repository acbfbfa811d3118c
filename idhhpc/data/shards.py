"""HDF5 shards of preprocessed patients, their JSON sidecars and the merged index.

A shard is trusted only through its sidecar, written after the shard and recording its sha256;
both are written atomically. A run killed at any moment therefore leaves either a complete,
checksummed pair or something :func:`build_shard` rebuilds and :func:`merge_index` rejects.

Compression, measured with ``python benchmarks/loader.py --compare-compression --patients 4``
(4 phantom patients, 128³ images + masks, 84 MB raw; 2 CPU cores shared with other work, so
speeds are noisy; ratio = raw/stored, speeds in MB/s of raw data, reads from the page cache):

    none        1.00×  write  686  read 5455
    lzf         4.15×  write  246  read  400
    gzip1       4.79×  write   84  read  278   (gzip2 4.84×/160/539, gzip3 4.89×/137/442,
                                                 gzip4 4.98×/115/323)
    zstd        4.81×  write  125  read 1537   (Blosc + zstd level 3 + byte shuffle)
    zstd5       5.18×  write  120  read 2096;  plain hdf5plugin.Zstd(3): 4.69×/400/2158

Blosc-zstd-3 with byte shuffle compresses as well as gzip and reads about 4× faster than lzf,
so it is the default of ``preprocess.compression`` (reading happens every epoch, writing once;
``hdf5plugin`` supplies the filter, a dependency of the package). "none" suits a fast local
scratch disk.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import hdf5plugin
import numpy as np

from idhhpc.atomic import atomic_path, atomic_write_json, sha256_file
from idhhpc.config import PreprocessConfig, fingerprint
from idhhpc.constants import SHARD_INDEX_FILE
from idhhpc.data.cases import CaseFiles, CaseRejected, PreprocessedCase
from idhhpc.data.geometry import GEOMETRY_KEYS
from idhhpc.data.preprocess import FORMAT_VERSION, preprocess_case, settings_hash, unexpected_reason
from idhhpc.ids import validate_patient_id

log = logging.getLogger(__name__)
COMPRESSIONS = ("none", "lzf", "gzip", "zstd")


class ShardError(RuntimeError):
    """A shard, sidecar or index that is missing, stale, corrupt or inconsistent."""


@dataclass
class ShardReport:
    shard_index: int
    path: Path
    status: str  # "written" or "skipped"
    n_planned: int
    n_written: int
    quarantined: list[dict[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0


def shard_name(shard_index: int) -> str:
    return f"shard-{shard_index:05d}"


def compression_options(compression: str) -> dict[str, Any]:
    """h5py ``create_dataset`` keyword arguments for one of :data:`COMPRESSIONS`."""
    if compression == "none":
        return {}
    if compression == "lzf":
        return {"compression": "lzf", "shuffle": True}
    if compression == "gzip":
        return {"compression": "gzip", "compression_opts": 1, "shuffle": True}
    if compression == "zstd":
        return dict(hdf5plugin.Blosc(cname="zstd", clevel=3, shuffle=hdf5plugin.Blosc.SHUFFLE))
    raise ValueError(f"unknown compression {compression!r}; choose one of {COMPRESSIONS}")


def _create(h5: h5py.File, name: str, data: np.ndarray, chunks: tuple[int, ...] | None, options: dict) -> None:
    if data.shape[0] == 0 or chunks is None:
        h5.create_dataset(name, data=data)
    else:
        h5.create_dataset(name, data=data, chunks=chunks, **options)


def _write_geometry(h5: h5py.File, cases: list[PreprocessedCase]) -> None:
    group = h5.create_group("geometry")
    for key in GEOMETRY_KEYS:
        values = [np.asarray(c.geometry[key]) for c in cases]
        group.create_dataset(key, data=np.stack(values) if values else np.zeros((0,)))


def write_shard(path: Path, cases: list[PreprocessedCase], settings_hash: str, modalities: list[str],
                compression: str, size: int | None = None) -> None:
    """Write ``cases`` into one HDF5 file atomically, one patient per image chunk.

    ``size`` is needed only for an empty shard (every patient quarantined).
    """
    options = compression_options(compression)
    size = int(cases[0].image.shape[-1]) if cases else int(size or 0)
    c = int(cases[0].image.shape[0]) if cases else len(modalities)
    cube = (size, size, size)
    images = np.stack([x.image for x in cases]) if cases else np.zeros((0, c, *cube), np.float16)
    brain = np.stack([x.brain for x in cases]) if cases else np.zeros((0, *cube), np.uint8)
    tumor = np.stack([x.tumor if x.tumor is not None else np.zeros(cube, np.uint8) for x in cases]) \
        if cases else np.zeros((0, *cube), np.uint8)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as h5:
        _create(h5, "images", images.astype(np.float16, copy=False), (1, c, *cube), options)
        _create(h5, "brain", brain, (1, *cube), options)
        _create(h5, "tumor", tumor, (1, *cube), options)
        h5.create_dataset("has_tumor", data=np.array([x.tumor is not None for x in cases], bool))
        h5.create_dataset("labels", data=np.array([-1 if x.label is None else x.label for x in cases], np.int8))
        h5.create_dataset("patient_ids", data=[x.patient_id for x in cases], dtype=h5py.string_dtype())
        _write_geometry(h5, cases)
        if cases and all(x.locator_image is not None for x in cases):
            _create(h5, "locator_images", np.stack([x.locator_image for x in cases]).astype(np.float16, copy=False),
                    (1, cases[0].locator_image.shape[0], *cube), options)
            _create(h5, "locator_tumor", np.stack([x.locator_tumor if x.locator_tumor is not None
                                                   else np.zeros(cube, np.uint8) for x in cases]), (1, *cube), options)
        h5.attrs.update({"modalities": list(modalities), "settings_hash": settings_hash,
                         "format_version": FORMAT_VERSION, "size": size, "compression": compression})


def _remove_stale_temps(shards_dir: Path, name: str) -> None:
    for suffix in (".h5", ".json"):
        for tmp in shards_dir.glob(f".{name}{suffix}.*.tmp"):
            tmp.unlink(missing_ok=True)


def _read_sidecar(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def inputs_fingerprint(cases: list[CaseFiles]) -> str:
    """What a shard was made from: each patient's label and the path, size and modification time
    of each input file. A regenerated or re-exported cohort with the same patient IDs (or a
    relabelled patient) changes it, so its shard is rebuilt; reading the files is not needed,
    which keeps the check cheap for hundreds of gigabytes of NIfTIs."""
    def stat(path: Path | None) -> list | None:
        if path is None:
            return None
        try:
            info = Path(path).stat()
        except OSError:
            return [str(path), "missing"]  # preprocessing quarantines the patient with the reason
        return [str(path), info.st_size, info.st_mtime_ns]

    record = [[c.patient_id, c.label, [stat(c.images[m]) for m in c.images], stat(c.brain_mask), stat(c.tumor_mask)]
              for c in cases]
    return fingerprint(record)


def _sidecar_matches(h5_path: Path, sidecar_path: Path, shash: str, planned: list[str], inputs: str) -> bool:
    sidecar = _read_sidecar(sidecar_path)
    if sidecar is None or not h5_path.is_file():
        return False
    return (sidecar.get("settings_hash") == shash and sidecar.get("planned") == planned
            and sidecar.get("inputs") == inputs and sidecar.get("sha256") == sha256_file(h5_path))


def sidecar_inputs(shards_dir: Path, shard_index: int) -> str | None:
    """The inputs fingerprint a shard's sidecar records (None when it has none)."""
    sidecar = _read_sidecar(Path(shards_dir) / f"{shard_name(shard_index)}.json")
    return None if sidecar is None else sidecar.get("inputs")


def _select_modalities(case: CaseFiles, modalities: list[str]) -> CaseFiles:
    missing = [m for m in modalities if m not in case.images]
    if missing:
        raise CaseRejected(case.patient_id, f"missing modality {', '.join(missing)}")
    return dataclasses.replace(case, images={m: Path(case.images[m]) for m in modalities})


def _preprocess_all(cases: list[CaseFiles], settings: PreprocessConfig, modalities: list[str], progress: bool):
    """Every patient stored or quarantined with its reason: whatever one patient's files raise
    (``preprocess_case`` turns the unforeseen into rejections too) never costs the others."""
    done, quarantined = [], []
    if progress:
        from tqdm import tqdm
        cases = tqdm(cases, desc="preprocess", unit="patient")
    for case in cases:
        try:
            done.append(preprocess_case(_select_modalities(case, modalities), settings))
        except CaseRejected as rejected:
            quarantined.append({"patient_id": rejected.patient_id, "reason": rejected.reason})
        except Exception as err:
            log.warning("patient %s: unexpected error", case.patient_id, exc_info=True)
            quarantined.append({"patient_id": case.patient_id, "reason": unexpected_reason(err)})
    return done, quarantined


def build_shard(shard_index: int, cases: list[CaseFiles], shards_dir: Path, settings: PreprocessConfig,
                modalities: list[str], compression: str | None = None,
                progress: bool = False) -> ShardReport:
    """Preprocess ``cases`` into ``shard-{i:05d}.h5`` + sidecar, or skip if both already match.

    ``compression`` defaults to ``settings.compression``.
    """
    compression = compression or settings.compression
    shards_dir, name = Path(shards_dir), shard_name(shard_index)
    h5_path, sidecar_path = shards_dir / f"{name}.h5", shards_dir / f"{name}.json"
    shards_dir.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(shards_dir, name)
    planned = [validate_patient_id(c.patient_id) for c in cases]
    shash, inputs = settings_hash(settings, modalities), inputs_fingerprint(cases)
    if _sidecar_matches(h5_path, sidecar_path, shash, planned, inputs):
        sidecar = _read_sidecar(sidecar_path)
        return ShardReport(shard_index, h5_path, "skipped", len(planned), len(sidecar["written"]),
                           sidecar["quarantined"], sidecar["warnings"], 0.0)
    started = time.perf_counter()
    done, quarantined = _preprocess_all(cases, settings, modalities, progress)
    write_shard(h5_path, done, shash, modalities, compression, size=settings.size)
    warnings = [w for c in done for w in c.warnings]
    seconds = time.perf_counter() - started
    atomic_write_json(sidecar_path, {
        "shard": h5_path.name, "sha256": sha256_file(h5_path), "settings_hash": shash,
        "format_version": FORMAT_VERSION, "modalities": list(modalities), "size": settings.size,
        "planned": planned, "inputs": inputs, "written": [c.patient_id for c in done],
        "labels": [c.label for c in done], "quarantined": quarantined,
        "warnings": warnings, "seconds": round(seconds, 3),
    })
    return ShardReport(shard_index, h5_path, "written", len(planned), len(done), quarantined, warnings, seconds)


def _checked_sidecar(shards_dir: Path, shard_index: int, shash: str) -> dict[str, Any]:
    name = shard_name(shard_index)
    sidecar = _read_sidecar(shards_dir / f"{name}.json")
    if sidecar is None:
        raise ShardError(f"shard {name}: sidecar {name}.json missing or unreadable; rerun preprocess")
    if sidecar.get("settings_hash") != shash:
        raise ShardError(f"shard {name}: stale, built with settings hash {sidecar.get('settings_hash')}, "
                         f"expected {shash}")
    h5_path = shards_dir / sidecar["shard"]
    if not h5_path.is_file() or sha256_file(h5_path) != sidecar["sha256"]:
        raise ShardError(f"shard {name}: {h5_path} missing or its sha256 differs from the sidecar (corrupt)")
    return sidecar


def merge_index(shards_dir: Path, n_shards: int, settings_hash: str) -> dict[str, Any]:
    """Check every shard against its sidecar and write ``shards_dir/index.json`` atomically."""
    shards_dir = Path(shards_dir)
    index: dict[str, Any] = {"format_version": FORMAT_VERSION, "settings_hash": settings_hash,
                             "modalities": None, "size": None, "shards": {}, "patients": {}, "quarantined": []}
    for i in range(n_shards):
        sidecar = _checked_sidecar(shards_dir, i, settings_hash)
        index["modalities"], index["size"] = sidecar["modalities"], sidecar["size"]
        index["shards"][sidecar["shard"]] = sidecar["sha256"]
        index["quarantined"].extend(sidecar["quarantined"])
        for row, (pid, label) in enumerate(zip(sidecar["written"], sidecar["labels"])):
            if pid in index["patients"]:
                raise ShardError(f"patient {pid} appears in {index['patients'][pid]['shard']} and {sidecar['shard']}")
            index["patients"][pid] = {"shard": sidecar["shard"], "row": row, "label": label}
    atomic_write_json(shards_dir / SHARD_INDEX_FILE, index)
    return index
