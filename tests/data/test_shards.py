import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest

from idhhpc.config import PreprocessConfig
from idhhpc.data.dataset import read_case
from idhhpc.data.preprocess import preprocess_case, settings_hash
from idhhpc.data.shards import ShardError, build_shard, merge_index, write_shard
from tests.support.synthetic_cases import write_case

MODALITIES = ["FLAIR", "T1", "T1c", "T2"]
SETTINGS = PreprocessConfig(size=16)
HASH = settings_hash(SETTINGS, MODALITIES)


def make_cases(root: Path, n: int, start: int = 0):
    return [write_case(root, f"UCSF-PDGM-{start + k:04d}", seed=start + k, label=k % 2,
                       with_tumor=k != 1) for k in range(n)]


@pytest.mark.parametrize("compression", ["none", "lzf", "gzip", "zstd"])
def test_shard_round_trip_is_exact(tmp_path, compression):
    cases = make_cases(tmp_path / "raw", 3)
    processed = [preprocess_case(c, SETTINGS) for c in cases]
    write_shard(tmp_path / "shards" / "shard-00000.h5", processed, HASH, MODALITIES, compression)
    with h5py.File(tmp_path / "shards" / "shard-00000.h5") as h5:
        assert h5["images"].chunks == (1, 4, 16, 16, 16) and h5["images"].dtype == np.float16
        assert list(h5.attrs["modalities"]) == MODALITIES and h5.attrs["settings_hash"] == HASH
        assert list(h5["has_tumor"][:]) == [True, False, True]
    build_shard(0, cases, tmp_path / "shards", SETTINGS, MODALITIES, compression)
    merge_index(tmp_path / "shards", 1, HASH)
    for original in processed:
        back = read_case(tmp_path / "shards" / "index.json", original.patient_id)
        np.testing.assert_array_equal(back.image, original.image)
        assert back.image.dtype == np.float16 and back.label == original.label
        np.testing.assert_array_equal(back.brain, original.brain)
        if original.tumor is None:
            assert back.tumor is None
        else:
            np.testing.assert_array_equal(back.tumor, original.tumor)
        for key, value in original.geometry.items():
            np.testing.assert_array_equal(back.geometry[key], value)


def test_rerun_skips_matching_and_rebuilds_changed_shards(tmp_path):
    cases = make_cases(tmp_path / "raw", 2)
    shards = tmp_path / "shards"
    assert build_shard(0, cases, shards, SETTINGS, MODALITIES).status == "written"
    assert build_shard(0, cases, shards, SETTINGS, MODALITIES).status == "skipped"
    assert build_shard(0, cases, shards, PreprocessConfig(size=12), MODALITIES).status == "written"
    assert build_shard(0, cases, shards, PreprocessConfig(size=12), MODALITIES).status == "skipped"
    assert build_shard(0, cases[:1], shards, PreprocessConfig(size=12), MODALITIES).status == "written"
    with open(shards / "shard-00000.h5", "r+b") as fh:
        fh.seek(-100, 2)
        fh.write(b"\0" * 50)
    assert build_shard(0, cases[:1], shards, PreprocessConfig(size=12), MODALITIES).status == "written"


def test_a_regenerated_image_or_a_new_label_with_the_same_patients_rebuilds_the_shard(tmp_path):
    cases = make_cases(tmp_path / "raw", 2)
    shards = tmp_path / "shards"
    assert build_shard(0, cases, shards, SETTINGS, MODALITIES).status == "written"
    redrawn = make_cases(tmp_path / "raw", 2, start=0)  # the same IDs and paths, written again
    for case in redrawn:
        for path in case.images.values():
            os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1_000_000))
    assert build_shard(0, redrawn, shards, SETTINGS, MODALITIES).status == "written"
    assert build_shard(0, redrawn, shards, SETTINGS, MODALITIES).status == "skipped"
    relabelled = [dataclasses.replace(redrawn[0], label=1 - redrawn[0].label), redrawn[1]]
    assert build_shard(0, relabelled, shards, SETTINGS, MODALITIES).status == "written"
    with h5py.File(shards / "shard-00000.h5") as h5:
        assert int(h5["labels"][0]) == relabelled[0].label


def test_quarantine_is_recorded_and_stale_temps_removed(tmp_path):
    cases = make_cases(tmp_path / "raw", 3)
    cases[2].images["T2"].write_bytes(b"broken")
    shards = tmp_path / "shards"
    shards.mkdir()
    stale = shards / ".shard-00000.h5.abc123.tmp"
    stale.write_bytes(b"half")
    report = build_shard(0, cases, shards, SETTINGS, MODALITIES)
    assert not stale.exists()
    assert report.n_written == 2 and [q["patient_id"] for q in report.quarantined] == ["UCSF-PDGM-0002"]
    sidecar = json.loads((shards / "shard-00000.json").read_text())
    assert "T2" in sidecar["quarantined"][0]["reason"] and sidecar["written"] == ["UCSF-PDGM-0000", "UCSF-PDGM-0001"]
    index = merge_index(shards, 1, HASH)
    assert index["quarantined"] == sidecar["quarantined"] and len(index["patients"]) == 2


def test_merge_index_detects_corrupt_missing_stale_and_duplicates(tmp_path):
    raw, shards = tmp_path / "raw", tmp_path / "shards"
    build_shard(0, make_cases(raw, 2), shards, SETTINGS, MODALITIES)
    build_shard(1, make_cases(raw, 2, start=2), shards, SETTINGS, MODALITIES)
    index = merge_index(shards, 2, HASH)
    assert index["patients"]["UCSF-PDGM-0003"] == {"shard": "shard-00001.h5", "row": 1, "label": 1}
    with pytest.raises(ShardError, match="shard-00002"):
        merge_index(shards, 3, HASH)
    with pytest.raises(ShardError, match="stale"):
        merge_index(shards, 2, "other-hash")
    build_shard(2, make_cases(raw, 1, start=3), shards, SETTINGS, MODALITIES)
    with pytest.raises(ShardError, match="UCSF-PDGM-0003"):
        merge_index(shards, 3, HASH)
    with open(shards / "shard-00001.h5", "r+b") as fh:
        fh.seek(2000)
        fh.write(b"\xff" * 8)
    with pytest.raises(ShardError, match="shard-00001.*corrupt"):
        merge_index(shards, 2, HASH)


BUILD_SCRIPT = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    import idhhpc.data.shards as shards
    from idhhpc.data.cases import CaseFiles
    from idhhpc.config import PreprocessConfig

    def announce_then_stall(name, original):
        def wrapped(*args, **kwargs):
            print(name, flush=True)
            time.sleep(0.3)
            return original(*args, **kwargs)
        return wrapped

    # stall inside preprocessing, or inside the open temporary .h5 (mid-write)
    shards.preprocess_case = announce_then_stall("preprocess", shards.preprocess_case)
    shards._write_geometry = announce_then_stall("write", shards._write_geometry)
    plan = json.loads(Path(sys.argv[1]).read_text())
    for i, shard in enumerate(plan["shards"]):
        cases = [CaseFiles(c["pid"], c["label"], {k: Path(v) for k, v in c["images"].items()},
                           Path(c["brain"]), Path(c["tumor"])) for c in shard]
        print("shard", i, flush=True)
        shards.build_shard(i, cases, Path(plan["out"]), PreprocessConfig(size=16), plan["modalities"])
""")


def _plan(cases, shards_dir, per_shard):
    groups = [cases[k:k + per_shard] for k in range(0, len(cases), per_shard)]
    as_json = [[{"pid": c.patient_id, "label": c.label, "images": {k: str(v) for k, v in c.images.items()},
                 "brain": str(c.brain_mask), "tumor": str(c.tumor_mask)} for c in g] for g in groups]
    return {"shards": as_json, "out": str(shards_dir), "modalities": MODALITIES}, groups


def _run_until(plan_path: Path, shard: int, stage: str) -> None:
    """Start a shard build in a subprocess and SIGKILL it once ``shard`` reaches ``stage``."""
    proc = subprocess.Popen([sys.executable, "-c", BUILD_SCRIPT, str(plan_path)], stdout=subprocess.PIPE, text=True)
    current = None
    while line := proc.stdout.readline():
        words = line.split()
        current = int(words[1]) if words[0] == "shard" else current
        if current == shard and words[0] == stage:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL


@pytest.mark.parametrize("stage", ["preprocess", "write"])
def test_killed_build_leaves_nothing_trusted_and_resumes(tmp_path, stage):
    cases = [write_case(tmp_path / "raw", f"UCSF-PDGM-{k:04d}", seed=k, label=k % 2) for k in range(6)]
    shards = tmp_path / "shards"
    plan, groups = _plan(cases, shards, per_shard=2)
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    _run_until(tmp_path / "plan.json", shard=1, stage=stage)
    assert not (shards / "shard-00001.h5").exists() and not (shards / "shard-00001.json").exists()
    if stage == "write":
        assert list(shards.glob(".shard-00001.h5.*.tmp")), "the kill should land mid-write"
    with pytest.raises(ShardError, match="shard-00001"):
        merge_index(shards, 3, HASH)
    reports = [build_shard(i, g, shards, SETTINGS, MODALITIES) for i, g in enumerate(groups)]
    assert [r.status for r in reports] == ["skipped", "written", "written"]
    index = merge_index(shards, 3, HASH)
    assert sorted(index["patients"]) == [c.patient_id for c in cases]
    assert not list(shards.glob(".*.tmp"))
    fresh = preprocess_case(cases[3], SETTINGS)
    np.testing.assert_array_equal(read_case(shards / "index.json", cases[3].patient_id).image, fresh.image)


def test_shard_where_every_patient_is_quarantined(tmp_path):
    cases = make_cases(tmp_path / "raw", 2)
    for case in cases:
        case.images["FLAIR"].unlink()
    report = build_shard(0, cases, tmp_path / "shards", SETTINGS, MODALITIES)
    assert report.n_written == 0 and len(report.quarantined) == 2
    assert all("missing file" in q["reason"] and "FLAIR" in q["reason"] for q in report.quarantined)
    index = merge_index(tmp_path / "shards", 1, HASH)
    assert index["patients"] == {} and index["size"] == 16
    with h5py.File(tmp_path / "shards" / "shard-00000.h5") as h5:
        assert h5["images"].shape == (0, 4, 16, 16, 16)
