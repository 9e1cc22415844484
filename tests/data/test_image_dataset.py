import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from ecanet.data import DatasetInfo, ImageDataset, ImageTransform
from ecanet.data.image_dataset import make_image_dataset

INFO = DatasetInfo("toy", 3, 1, 12, (0.5,), (0.25,), ("a", "b", "c"))


def toy(count: int = 40) -> ImageDataset:
    images = torch.randint(0, 256, (count, 12, 12), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    dataset, _ = make_image_dataset(images, torch.arange(count) % 3, INFO, augment=True, seed=9)
    return dataset


def test_items_are_normalised_images_and_int_labels() -> None:
    dataset = ImageDataset(
        torch.full((2, 1, 4, 4), 255, dtype=torch.uint8), torch.tensor([2, 0]), ImageTransform((0.5,), (0.25,))
    )
    image, label = dataset[0]
    assert image.shape == (1, 4, 4) and label == 2 and isinstance(label, int)
    assert torch.allclose(image, torch.full((1, 4, 4), 2.0), rtol=0, atol=1e-6)  # (1 - 0.5) / 0.25


def test_set_epoch_changes_the_augmentation() -> None:
    dataset = toy()
    first = torch.stack([dataset[index][0] for index in range(len(dataset))])
    dataset.set_epoch(1)
    second = torch.stack([dataset[index][0] for index in range(len(dataset))])
    dataset.set_epoch(0)
    again = torch.stack([dataset[index][0] for index in range(len(dataset))])
    assert not torch.equal(first, second) and torch.equal(first, again)


def test_numpy_tensor_and_negative_indices_give_the_same_augmented_item() -> None:
    dataset = toy()
    image, label = dataset[len(dataset) - 1]
    for index in (np.int64(len(dataset) - 1), torch.tensor(len(dataset) - 1), -1):
        other, other_label = dataset[index]
        assert torch.equal(other, image) and other_label == label
    dataset.set_epoch(np.int64(1))
    assert dataset.epoch == 1 and type(dataset.epoch) is int
    subset = torch.utils.data.Subset(dataset, np.arange(4))  # numpy indices, as people pass them
    images, _ = next(iter(DataLoader(subset, batch_size=4)))
    assert torch.equal(images[3], dataset[3][0])
    with pytest.raises(IndexError):
        dataset[len(dataset)]


@pytest.mark.slow
def test_worker_processes_give_the_same_batches_as_the_main_process() -> None:
    dataset = toy()
    batches = {}
    for workers in (0, 2):
        loader = DataLoader(dataset, batch_size=8, num_workers=workers)
        batches[workers] = [images for images, _ in loader]
    assert all(torch.equal(a, b) for a, b in zip(batches[0], batches[2], strict=True))


def test_make_image_dataset_adds_the_channel_axis_and_resizes() -> None:
    dataset, info = make_image_dataset(
        torch.zeros(3, 8, 8, dtype=torch.uint8), torch.tensor([0, 1, 2]), INFO, augment=False, seed=0
    )
    assert dataset.images.shape == (3, 1, 12, 12) and info is INFO


@pytest.mark.parametrize("labels", [torch.tensor([0, 1, 3]), torch.tensor([0, -1, 2])])
def test_labels_outside_the_classes_are_refused_when_loading(labels: torch.Tensor) -> None:
    # Not later, as an IndexError in the loss or a device-side assert on a GPU.
    with pytest.raises(ValueError, match=r"toy: labels must lie in 0..2 \(3 classes\), got -?\d\.\.\d"):
        make_image_dataset(torch.zeros(3, 8, 8, dtype=torch.uint8), labels, INFO, augment=False, seed=0)


@pytest.mark.parametrize(
    ("images", "labels", "message"),
    [
        (torch.zeros(2, 1, 4, 4), torch.zeros(2), r"images must be a uint8 \(N, C, H, W\) tensor, got torch.float32"),
        (torch.zeros(2, 4, 4, dtype=torch.uint8), torch.zeros(2), r"got torch.uint8 \(2, 4, 4\)"),
        (torch.zeros(2, 1, 4, 4, dtype=torch.uint8), torch.zeros(3), r"labels must have shape \(2,\), got \(3,\)"),
    ],
)
def test_invalid_arrays_are_named(images: torch.Tensor, labels: torch.Tensor, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ImageDataset(images, labels, ImageTransform((0.5,), (0.5,)))
