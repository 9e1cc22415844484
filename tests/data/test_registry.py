import pytest
import torch

from ecanet.data import DATASETS, load_dataset


def test_names() -> None:
    assert sorted(DATASETS) == ["cifar10", "cifar100", "fashion-mnist", "fashion-mnist-full", "imagefolder"]


def test_default_dataset_needs_no_files_and_augments_reproducibly() -> None:
    first, info = load_dataset("fashion-mnist", train=True, augment=True, seed=3)
    second, _ = load_dataset("fashion-mnist", train=True, augment=True, seed=3)
    plain, _ = load_dataset("fashion-mnist", train=True, augment=False)
    assert info.name == "fashion-mnist" and len(first) == 12000
    assert all(torch.equal(first[index][0], second[index][0]) for index in range(50))
    assert not all(torch.equal(first[index][0], plain[index][0]) for index in range(50))


def test_image_size_resizes() -> None:
    dataset, info = load_dataset("fashion-mnist", train=False, augment=False, image_size=32)
    assert info.image_size == 32 and dataset[0][0].shape == (1, 32, 32)


@pytest.mark.parametrize(
    ("name", "kwargs", "message"),
    [
        ("mnist", {}, r"name must be one of \['cifar10', 'cifar100', 'fashion-mnist', .*\], got 'mnist'"),
        ("fashion-mnist", {"data_dir": "x"}, "data_dir='x' is not used by 'fashion-mnist'"),
        ("fashion-mnist", {"image_size": 4}, "image_size must be an integer of at least 8 or None, got 4"),
        ("fashion-mnist", {"image_size": 32.0}, "image_size must be an integer of at least 8 or None, got 32.0"),
    ],
)
def test_bad_arguments_are_named(name: str, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_dataset(name, train=True, augment=False, **kwargs)
