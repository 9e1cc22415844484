"""``load_dataset``: one entry point for every dataset ecanet knows, by name."""

from __future__ import annotations

from functools import partial
from pathlib import Path

from ecanet.data.cifar import load_cifar
from ecanet.data.fashion_mnist import load_fashion_mnist, load_fashion_mnist_subset
from ecanet.data.image_dataset import ImageDataset
from ecanet.data.image_folder import load_image_folder
from ecanet.data.info import DatasetInfo

__all__ = ["DATASETS", "load_dataset"]


def _subset(data_dir: str | Path | None, **kwargs: object) -> tuple[ImageDataset, DatasetInfo]:
    if data_dir is not None:
        raise ValueError(
            f"data_dir={str(data_dir)!r} is not used by 'fashion-mnist' (the subset embedded in ecanet); "
            "use 'fashion-mnist-full' to read the full dataset from a directory"
        )
    return load_fashion_mnist_subset(**kwargs)


DATASETS = {
    "fashion-mnist": _subset,
    "fashion-mnist-full": load_fashion_mnist,
    "imagefolder": load_image_folder,
    "cifar10": partial(load_cifar, "cifar10"),
    "cifar100": partial(load_cifar, "cifar100"),
}


def load_dataset(
    name: str,
    data_dir: str | Path | None = None,
    *,
    train: bool,
    augment: bool,
    seed: int = 0,
    image_size: int | None = None,
) -> tuple[ImageDataset, DatasetInfo]:
    """Loads one split of a dataset as an in-memory image dataset plus its description.

    Args:
        name: ``"fashion-mnist"`` (the subset embedded in ecanet, no files needed),
            ``"fashion-mnist-full"`` (IDX files in ``data_dir``, default
            ``/usr/share/datasets/fashion-mnist``), ``"imagefolder"`` (class-per-subfolder images in
            ``data_dir``), ``"cifar10"`` or ``"cifar100"`` (the python-version directory in ``data_dir``).
        data_dir: where the files are; see ``name``.
        train: the training split (True) or the test/validation split.
        augment: random crop with padding and horizontal flips, seeded by ``seed``, epoch and index.
        seed: seed of augmentation (and of the train/validation split of a single image folder).
        image_size: resize to this square side. None keeps the dataset's own size (28 for
            Fashion-MNIST, 32 for CIFAR, 64 for image folders).

    Returns:
        ``(dataset, info)``; items are ``(float32 image (C, H, W), int label)``.

    Example:
        >>> data, info = load_dataset("fashion-mnist", train=False, augment=False)
        >>> len(data), info.in_chans, info.image_size, info.classes[0]
        (2000, 1, 28, 'T-shirt/top')
    """
    if name not in DATASETS:
        raise ValueError(f"name must be one of {sorted(DATASETS)}, got {name!r}")
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 8):
        raise ValueError(f"image_size must be an integer of at least 8 or None, got {image_size!r}")
    return DATASETS[name](data_dir, train=train, augment=augment, seed=seed, image_size=image_size)
