"""Crafted hostile NIfTI files, a cohort holding them beside good patients, and a measurer.

Every case replaces one file of an otherwise good UCSF-PDGM patient (40x36x30, from
``synthetic_cases.write_case``) with what an attacker or a broken exporter would hand over. On
disk each is a few KB, except the two gzip bombs (about 1.5 MB: deflate expands at most ~1000:1,
so a file that inflates past 1 GiB cannot be smaller without nesting).

``python -m tests.support.hostile_nifti cohort|predict ...`` runs the cases in a fresh process
(so its peak memory is theirs alone: ``ru_maxrss`` after the imports vs at the end) and prints
one JSON object with each case's reason, seconds and traced peak (``tracemalloc``: every numpy
and Python allocation, reset per case).
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import resource
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np

from tests.support.synthetic_cases import RAS_AFFINE, write_case
from tests.support.ucsf_layout import write_metadata

GOOD = ("UCSF-PDGM-0001", "UCSF-PDGM-0002")
BOMB_MEMBERS, BOMB_MEMBER_BYTES = 96, 16 << 20
"""The bombs' tail: 96 gzip members of 16 MiB of zeros each, 1.5 GiB inflated, 1.5 MB on disk."""
MIB = 1 << 20


def _header_only(shape, dtype, slope: float | None = None) -> bytes:
    """A NIfTI-1 header claiming ``shape``/``dtype``, with no voxels after it."""
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(dtype)
    header.set_sform(RAS_AFFINE, code=1)
    header.set_qform(RAS_AFFINE, code=1)
    header["vox_offset"] = 352
    if slope is not None:
        header["scl_slope"] = slope
    return header.binaryblock + b"\0" * 4


def _image_bytes(data: np.ndarray) -> bytes:
    return nib.Nifti1Image(data, RAS_AFFINE).to_bytes()


def _zero_members() -> bytes:
    return gzip.compress(bytes(BOMB_MEMBER_BYTES), compresslevel=9) * BOMB_MEMBERS


def _flair(folder: Path) -> Path:
    return next(folder.glob("*_FLAIR.nii.gz"))


def _replace(folder: Path, content: bytes, suffix: str = ".nii.gz") -> None:
    flair = _flair(folder)
    flair.unlink()
    flair.with_name(flair.name.removesuffix(".nii.gz") + suffix).write_bytes(content)


def _good_flair(folder: Path) -> np.ndarray:
    return np.asarray(nib.load(_flair(folder)).dataobj).copy()


def _huge_header(folder: Path) -> None:
    _replace(folder, _header_only((2048, 2048, 2048), np.int16) + bytes(2048), ".nii")


def _header_beyond_file(folder: Path) -> None:
    _replace(folder, _header_only((320, 320, 320), np.int16) + bytes(2048), ".nii")


def _bomb_claimed(folder: Path) -> None:
    _replace(folder, gzip.compress(_header_only((1024, 1024, 1536), np.uint8)) + _zero_members())


def _bomb_overlong(folder: Path) -> None:
    _replace(folder, gzip.compress(_image_bytes(_good_flair(folder))) + _zero_members())


def _elongated(folder: Path) -> None:
    _replace(folder, gzip.compress(_image_bytes(np.ones((1200, 2, 2), np.float32))))


def _truncated(folder: Path) -> None:
    raw = _flair(folder).read_bytes()
    _replace(folder, raw[: len(raw) // 2])


def _forged_size(folder: Path) -> None:
    raw = _flair(folder).read_bytes()
    _replace(folder, raw[:-4] + b"\xff\xff\xff\xff")


def _non_finite(value: float) -> Callable[[Path], None]:
    def write(folder: Path) -> None:
        data = _good_flair(folder)
        data[data != 0] = value
        _replace(folder, gzip.compress(_image_bytes(data)))
    return write


def _overflowing_scale(folder: Path) -> None:
    data = np.round(_good_flair(folder)).astype(np.int16)
    _replace(folder, gzip.compress(_header_only(data.shape, np.int16, slope=1e38) + data.tobytes(order="F")))


CASES: dict[str, tuple[str, Callable[[Path], None], str]] = {
    "huge_header": ("header claims 2048^3 int16, 2 KB .nii", _huge_header, "more than preprocess.max_voxels"),
    "header_beyond_file": ("header claims 320^3 int16 (65 MB), 2 KB .nii", _header_beyond_file, "bytes on disk"),
    "bomb_claimed": ("gzip bomb, header claims its 1.5 GiB", _bomb_claimed, "more than preprocess.max_voxels"),
    "bomb_overlong": ("gzip bomb, 1.5 GiB after a good 40x36x30 volume", _bomb_overlong, "inflates to more than"),
    "elongated": ("(1200, 2, 2) volume, pads to a 1200^3 cube", _elongated, "too elongated"),
    "truncated": ("good .nii.gz cut in half", _truncated, "truncated"),
    "forged_size": ("gzip size field forged to 4 GiB", _forged_size, "corrupt gzip data"),
    "nan_volume": ("FLAIR NaN in the whole brain", _non_finite(np.nan), "nan_repair_limit"),
    "inf_volume": ("FLAIR +Inf in the whole brain", _non_finite(np.inf), "nan_repair_limit"),
    "overflowing_scale": ("int16 FLAIR with scl_slope 1e38", _overflowing_scale, "overflow float32"),
}
"""name: (what the file is, how to write it into a patient folder, what its rejection says)."""


def case_patients() -> dict[str, str]:
    """Crafted case name → its patient id (``UCSF-PDGM-0101``, ...)."""
    return {name: f"UCSF-PDGM-{101 + i:04d}" for i, name in enumerate(CASES)}


def write_hostile_cohort(root: Path) -> dict[str, Path]:
    """A UCSF-PDGM folder: the good patients and one patient per crafted case; patient → folder."""
    root.mkdir(parents=True, exist_ok=True)
    folders = {}
    for seed, patient in enumerate(GOOD):
        folders[patient] = write_case(root, patient, seed=seed).images["FLAIR"].parent
    for seed, (name, patient) in enumerate(case_patients().items(), start=len(GOOD)):
        folder = write_case(root, patient, seed=seed).images["FLAIR"].parent
        CASES[name][1](folder)
        folders[patient] = folder
    rows = [(f"UCSF-PDGM-{pid[-3:]}", "wildtype" if i % 2 else "IDH1 p.R132H") for i, pid in enumerate(folders)]
    write_metadata(root, rows)
    return folders


def max_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measured(action: Callable[[], str]) -> dict:
    """``action``'s result with its seconds and traced peak memory (MiB)."""
    tracemalloc.reset_peak()
    started = time.perf_counter()
    outcome = action()
    seconds = time.perf_counter() - started
    return {"outcome": outcome, "seconds": round(seconds, 3),
            "traced_peak_mib": round(tracemalloc.get_traced_memory()[1] / MIB, 1)}


def _cohort_outcome(folder: Path, patient: str, config) -> str:
    from idhhpc.data.cases import CaseRejected
    from idhhpc.data.cohort import case_from_folder
    from idhhpc.data.preprocess import preprocess_case

    case, problem = case_from_folder(patient, 0, folder, config.data.modalities, False,
                                     max_voxels=config.preprocess.max_voxels)
    if case is None:
        return f"cohort: {problem}"
    try:
        preprocess_case(case, config.preprocess)
    except CaseRejected as rejected:
        return f"preprocess: {rejected.reason}"
    return "accepted"


def run_cohort_cases(root: Path, work: Path) -> dict:
    """Each crafted patient through the cohort check and preprocessing, then the real cohort,
    preprocess and merge steps on the whole folder (one shard, good and crafted together)."""
    from idhhpc.config import load_job
    from idhhpc.data.cohort import read_quarantine
    from idhhpc.stages.cohort import run_cohort
    from idhhpc.stages.preprocess import count_shards, run_merge_index, run_preprocess_shard
    from idhhpc.workdir import WorkDir

    config = load_job(None, [f"work_dir={work}", f"data.root={root}", "data.phantom=null", "data.min_patients=2",
                             "preprocess.size=32", "preprocess.shard_size=32"])
    baseline = max_rss_mib()
    tracemalloc.start()
    cases = {name: measured(lambda: _cohort_outcome(root / f"{pid}_nifti", pid, config))
             for name, pid in case_patients().items()}
    pipeline = measured(lambda: _run_steps(config, run_cohort, count_shards, run_preprocess_shard, run_merge_index))
    tracemalloc.stop()
    index = json.loads(WorkDir(work).index.read_text())
    return {"cases": cases, "pipeline": pipeline, "stored": sorted(index["patients"]),
            "quarantine": dict(read_quarantine(WorkDir(work).quarantine)),
            "max_rss_delta_mib": round(max_rss_mib() - baseline, 1)}


def _run_steps(config, run_cohort, count_shards, run_preprocess_shard, run_merge_index) -> str:
    run_cohort(config)
    for shard in range(count_shards(config)):
        run_preprocess_shard(config, shard)
    run_merge_index(config)
    return "done"


def run_predict_cases(checkpoint: Path, root: Path, out: Path) -> dict:
    """``idhhpc.predict.main`` on every crafted patient: exit code and message. A first call on a
    missing folder loads the libraries and the model, so the baseline holds them."""
    from idhhpc.predict import main

    def call(folder: Path) -> str:
        stderr = io.StringIO()
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            code = main(["--checkpoint", str(checkpoint), "--patient", str(folder), "--out", str(out / folder.name),
                         "--device", "cpu"])
        return f"{code}: {stderr.getvalue().strip()}"

    warm_up = call(root / "missing_nifti")
    baseline = max_rss_mib()
    tracemalloc.start()
    cases = {name: measured(lambda: call(root / f"{pid}_nifti")) for name, pid in case_patients().items()}
    tracemalloc.stop()
    return {"warm_up": warm_up, "cases": cases, "max_rss_delta_mib": round(max_rss_mib() - baseline, 1)}


def main(argv: list[str]) -> int:
    command, *paths = argv
    if command == "cohort":
        result = run_cohort_cases(Path(paths[0]), Path(paths[1]))
    elif command == "predict":
        result = run_predict_cases(Path(paths[0]), Path(paths[1]), Path(paths[2]))
    else:
        raise SystemExit(f"unknown command {command!r}: cohort ROOT WORK | predict MODEL ROOT OUT")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
