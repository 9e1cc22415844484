"""Fashion-MNIST (Xiao, Rasul & Vollgraf 2017; Zalando Research, MIT licence): 28x28 grayscale clothing photos.

Two sources: a stratified subset embedded in the package (the default, works offline everywhere)
and the full 70,000 images from the IDX files, found by path.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ecanet.data.idx import read_idx
from ecanet.data.image_dataset import ImageDataset, make_image_dataset
from ecanet.data.info import DatasetInfo

__all__ = [
    "CLASSES",
    "DEFAULT_DIRECTORY",
    "SUBSET_FILE",
    "find_fashion_mnist_files",
    "load_fashion_mnist",
    "load_fashion_mnist_subset",
    "subset_metadata",
]

CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
# Pixel statistics of the full 60,000 training images, scaled to [0, 1].
MEAN = (0.2860,)
STD = (0.3530,)
# Where the Debian/Ubuntu package ``dataset-fashion-mnist`` installs the IDX files.
DEFAULT_DIRECTORY = Path("/usr/share/datasets/fashion-mnist")
SUBSET_FILE = Path(__file__).with_name("fashion_mnist_subset.npz")
SPLIT_FILES = {
    True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
HOW_TO_GET = (
    "Install the Debian/Ubuntu package 'dataset-fashion-mnist' (files land in /usr/share/datasets/fashion-mnist), "
    "or download the four *-ubyte.gz files from https://github.com/zalandoresearch/fashion-mnist into a directory "
    "and pass it as data_dir."
)


def _info(name: str, image_size: int | None) -> DatasetInfo:
    return DatasetInfo(name, len(CLASSES), 1, image_size or 28, MEAN, STD, CLASSES)


def find_fashion_mnist_files(data_dir: str | Path | None, *, train: bool) -> tuple[Path, Path]:
    """Finds the image and label IDX files of one split, plain or ``.gz``.

    Args:
        data_dir: directory holding the files; None looks in ``/usr/share/datasets/fashion-mnist``.
        train: the 60,000-image training split (True) or the 10,000-image test split.

    Returns:
        ``(images_path, labels_path)``.

    Raises:
        FileNotFoundError: naming the directory searched, the file names and how to get them.

    Example:
        >>> import tempfile
        >>> find_fashion_mnist_files(tempfile.mkdtemp(), train=True)
        Traceback (most recent call last):
        ...
        FileNotFoundError: Fashion-MNIST not found: looked for train-images-idx3-ubyte[.gz] in ...
    """
    directory = Path(data_dir) if data_dir is not None else DEFAULT_DIRECTORY
    found = []
    for stem in SPLIT_FILES[train]:
        candidates = [directory / f"{stem}.gz", directory / stem]
        path = next((candidate for candidate in candidates if candidate.is_file()), None)
        if path is None:
            raise FileNotFoundError(
                f"Fashion-MNIST not found: looked for {stem}[.gz] in {str(directory)!r} "
                f"(data_dir={None if data_dir is None else str(data_dir)!r}). {HOW_TO_GET}"
            )
        found.append(path)
    return found[0], found[1]


def load_fashion_mnist(
    data_dir: str | Path | None = None, *, train: bool, augment: bool, seed: int = 0, image_size: int | None = None
) -> tuple[ImageDataset, DatasetInfo]:
    """The full Fashion-MNIST split from its IDX files.

    Args:
        data_dir: directory with the IDX files; None means ``/usr/share/datasets/fashion-mnist``.
        train: training split (60,000 images) or test split (10,000).
        augment: random crop with 3-pixel padding and horizontal flips.
        seed: augmentation seed.
        image_size: resize to this side (None keeps 28).

    Example:
        >>> import gzip, struct, tempfile, pathlib
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> images = struct.pack(">BBBBIII", 0, 0, 8, 3, 2, 28, 28) + bytes(2 * 28 * 28)
        >>> labels = struct.pack(">BBBBI", 0, 0, 8, 1, 2) + bytes([9, 0])
        >>> _ = (folder / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(images))
        >>> _ = (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(labels))
        >>> data, info = load_fashion_mnist(folder, train=False, augment=False)
        >>> len(data), info.classes[data[0][1]]
        (2, 'Ankle boot')
    """
    images_path, labels_path = find_fashion_mnist_files(data_dir, train=train)
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or labels.shape != images.shape[:1]:
        raise ValueError(f"{str(images_path)!r} and {str(labels_path)!r} do not hold matching images and labels")
    return make_image_dataset(
        torch.from_numpy(images.copy()),
        torch.from_numpy(labels.astype(np.int64)),
        _info("fashion-mnist-full", image_size),
        augment=augment,
        seed=seed,
    )


def load_fashion_mnist_subset(
    *, train: bool, augment: bool, seed: int = 0, image_size: int | None = None
) -> tuple[ImageDataset, DatasetInfo]:
    """The stratified Fashion-MNIST subset shipped inside ecanet (12,000 training and 2,000 test images).

    It was drawn from the full files by ``scripts/make_fashion_mnist_subset.py``; the JSON file
    next to it records the source files' SHA-256 and the selection seed.

    Args:
        train: training part (1,200 images per class) or test part (200 per class, from the test split).
        augment: random crop with 3-pixel padding and horizontal flips.
        seed: augmentation seed.
        image_size: resize to this side (None keeps 28).

    Example:
        >>> data, info = load_fashion_mnist_subset(train=False, augment=False)
        >>> len(data), info.num_classes, data[0][0].shape
        (2000, 10, torch.Size([1, 28, 28]))
    """
    split = "train" if train else "test"
    with np.load(SUBSET_FILE) as arrays:
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
    return make_image_dataset(
        torch.from_numpy(images),
        torch.from_numpy(labels.astype(np.int64)),
        _info("fashion-mnist", image_size),
        augment=augment,
        seed=seed,
    )


def subset_metadata() -> dict:
    """The provenance record of the embedded subset (source checksums, seed, counts).

    Example:
        >>> subset_metadata()["seed"]
        0
    """
    return json.loads(SUBSET_FILE.with_suffix(".json").read_text())
