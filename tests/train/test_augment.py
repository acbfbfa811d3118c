import torch
from torch.utils.data import DataLoader

from idhhpc.data.augment import AugmentedDataset, make_train_transform
from tests.support.toy import make_toy_dataset


def _augmented(seed=0):
    return AugmentedDataset(make_toy_dataset(6, size=12, seed=1), make_train_transform(seed), seed=seed)


def test_augmentation_is_a_pure_function_of_seed_epoch_index_draw():
    dataset = _augmented()
    dataset.set_epoch(2)
    first = dataset[(3, 0)]["image"]
    dataset[(1, 0)]
    torch.manual_seed(77)
    assert torch.equal(first, dataset[(3, 0)]["image"])
    assert not torch.equal(first, dataset[(3, 1)]["image"])
    dataset.set_epoch(3)
    assert not torch.equal(first, dataset[(3, 0)]["image"])


def test_augmentation_changes_image_but_keeps_shape_label_and_id():
    base = make_toy_dataset(6, size=12, seed=1)
    item = _augmented()[(2, 0)]
    assert item["image"].shape == base[2]["image"].shape and item["image"].dtype == torch.float32
    assert type(item["image"]) is torch.Tensor
    assert item["label"] == base[2]["label"] and item["patient_id"] == base[2]["patient_id"]
    assert not torch.equal(item["image"], base[2]["image"])


def test_augmentation_does_not_depend_on_worker_count():
    keys = [[(i, i) for i in range(3)], [(i, i) for i in range(3, 6)]]
    single = [b["image"] for b in DataLoader(_augmented(), batch_sampler=keys, num_workers=0)]
    multi = [b["image"] for b in DataLoader(_augmented(), batch_sampler=keys, num_workers=2)]
    assert all(torch.equal(a, b) for a, b in zip(single, multi))
