import pickle

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from idhhpc.config import PreprocessConfig
from idhhpc.data.dataset import ShardDataset, read_case
from idhhpc.data.preprocess import preprocess_case, settings_hash
from idhhpc.data.shards import ShardError, build_shard, merge_index
from tests.support.synthetic_cases import write_case

MODALITIES = ["FLAIR", "T1", "T1c", "T2"]
SETTINGS = PreprocessConfig(size=16)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("cohort")
    cases = [write_case(root / "raw", f"UCSF-PDGM-{k:04d}", seed=k, label=k % 2 if k != 4 else None)
             for k in range(5)]
    build_shard(0, cases[:3], root / "shards", SETTINGS, MODALITIES)
    build_shard(1, cases[3:], root / "shards", SETTINGS, MODALITIES)
    merge_index(root / "shards", 2, settings_hash(SETTINGS, MODALITIES))
    return root / "shards" / "index.json", cases


def test_items_labels_and_masks(built):
    index_path, cases = built
    dataset = ShardDataset(index_path, with_masks=True)
    assert len(dataset) == 5
    np.testing.assert_array_equal(dataset.labels, [0, 1, 0, 1, -1])
    sample = dataset[3]
    assert sample["image"].dtype == torch.float32 and sample["image"].shape == (4, 16, 16, 16)
    assert sample["patient_id"] == "UCSF-PDGM-0003" and sample["label"] == 1
    expected = preprocess_case(cases[3], SETTINGS)
    np.testing.assert_array_equal(sample["image"].numpy(), expected.image.astype(np.float32))
    np.testing.assert_array_equal(sample["tumor"].numpy(), expected.tumor)
    subset = ShardDataset(index_path, patient_ids=["UCSF-PDGM-0004", "UCSF-PDGM-0001"])
    np.testing.assert_array_equal(subset.labels, [-1, 1])
    with pytest.raises(KeyError, match="UCSF-PDGM-9999"):
        ShardDataset(index_path, patient_ids=["UCSF-PDGM-9999"])


def test_handles_are_not_pickled(built):
    dataset = ShardDataset(built[0])
    dataset[0]
    assert dataset._handles
    clone = pickle.loads(pickle.dumps(dataset))
    assert clone._handles == {}
    assert torch.equal(clone[0]["image"], dataset[0]["image"])


def test_dataloader_with_two_workers(built):
    dataset = ShardDataset(built[0], verify=True)
    dataset[0]  # the parent holds open handles; forked workers must not reuse them
    loader = DataLoader(dataset, batch_size=2, num_workers=2, shuffle=False)
    seen = [pid for batch in loader for pid in batch["patient_id"]]
    assert seen == dataset.patient_ids
    assert next(iter(loader))["image"].shape == (2, 4, 16, 16, 16)


def test_verify_detects_corrupt_shard(built, tmp_path):
    index_path, _ = built
    copy = tmp_path / "shards"
    copy.mkdir()
    for f in index_path.parent.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    with open(copy / "shard-00001.h5", "r+b") as fh:
        fh.seek(3000)
        fh.write(b"\x00\x01\x02")
    ShardDataset(copy / "index.json")  # lazy by default
    with pytest.raises(ShardError, match="shard-00001.h5"):
        ShardDataset(copy / "index.json", verify=True)


def test_read_case_unknown_patient(built):
    with pytest.raises(KeyError, match="UCSF-PDGM-9999"):
        read_case(built[0], "UCSF-PDGM-9999")
