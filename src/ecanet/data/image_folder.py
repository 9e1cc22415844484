"""Folders of images, one subfolder per class (the ImageFolder convention).

Two layouts are recognised:

- ``data_dir/train/<class>/*`` with ``data_dir/val/<class>/*`` (or ``test``): separate splits;
- ``data_dir/<class>/*`` (or ``data_dir/train/<class>/*`` alone): one pool, split per class into
  training and validation with a seed.

Images are decoded once, converted to RGB, resized on the short side and centre-cropped to a
square, and kept in memory as uint8. Files that cannot be decoded are skipped and counted in a
warning.
"""

from __future__ import annotations

import random
import warnings
from pathlib import Path

import numpy as np
import torch

from ecanet.data.image_dataset import ImageDataset, make_image_dataset
from ecanet.data.info import DatasetInfo
from ecanet.dependencies import require

__all__ = ["DEFAULT_IMAGE_SIZE", "IMAGE_EXTENSIONS", "find_image_files", "load_image_folder"]

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"})
DEFAULT_IMAGE_SIZE = 64
VALIDATION_NAMES = ("val", "validation", "test")
# ImageNet statistics: the usual choice for natural RGB photos.
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def find_image_files(directory: str | Path, classes: tuple[str, ...] | None = None) -> tuple[list, tuple[str, ...]]:
    """Lists ``(path, label)`` for every image file under ``directory/<class>/``, sorted.

    Hidden folders and files (``.ipynb_checkpoints``, ``.DS_Store``) are not classes or images.

    Args:
        directory: a folder with one subfolder per class.
        classes: class names fixing the label order (for a validation folder); None uses the
            sorted subfolder names, each of which must hold an image.

    Returns:
        ``(samples, classes)``.

    Raises:
        ValueError: a class folder without images (``classes`` None), or one that ``classes`` lacks.

    Example:
        >>> import tempfile, pathlib
        >>> root = pathlib.Path(tempfile.mkdtemp())
        >>> for name in ["cat/a.png", "cat/notes.txt", "dog/b.jpg"]:
        ...     (root / name).parent.mkdir(exist_ok=True)
        ...     _ = (root / name).write_bytes(b"")
        >>> samples, classes = find_image_files(root)
        >>> [(path.name, label) for path, label in samples], classes
        ([('a.png', 0), ('b.jpg', 1)], ('cat', 'dog'))
    """
    directory = Path(directory)
    found = tuple(sorted(entry.name for entry in directory.iterdir() if entry.is_dir() and not _hidden(entry.name)))
    from_folders = classes is None
    if from_folders:
        classes = found
    elif unknown := sorted(set(found) - set(classes)):
        raise ValueError(f"{str(directory)!r} has class folders {unknown} that the training folder lacks")
    samples = [
        (path, label)
        for label, name in enumerate(classes)
        if (directory / name).is_dir()
        for path in sorted((directory / name).rglob("*"))
        if path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file()
        and not any(_hidden(part) for part in path.relative_to(directory / name).parts)
    ]  # fmt: skip
    if from_folders and (empty := sorted(set(classes) - {classes[label] for _, label in samples})):
        raise ValueError(
            f"class folders {empty} in {str(directory)!r} hold no images ({', '.join(sorted(IMAGE_EXTENSIONS))}): "
            "add images or remove the folders"
        )
    return samples, classes


def _hidden(name: str) -> bool:
    return name.startswith(".")


def _decode(samples: list, image_size: int, directory: Path) -> tuple[torch.Tensor, torch.Tensor]:
    require("reading image folders", "pillow", "tqdm")
    from PIL import Image, ImageOps
    from tqdm.auto import tqdm

    images, labels, skipped = [], [], []
    for path, label in tqdm(samples, desc=f"decoding {directory.name}", disable=len(samples) < 2000, leave=False):
        try:
            with Image.open(path) as image:
                square = ImageOps.fit(image.convert("RGB"), (image_size, image_size), Image.Resampling.BICUBIC)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
            skipped.append(path)
            continue
        images.append(np.asarray(square, dtype=np.uint8).transpose(2, 0, 1))
        labels.append(label)
    if skipped:
        names = ", ".join(str(path.relative_to(directory)) for path in skipped[:5])
        warnings.warn(
            f"skipped {len(skipped)} unreadable image(s) of {len(samples)} in {str(directory)!r}: {names}"
            + (", ..." if len(skipped) > 5 else ""),
            stacklevel=3,
        )
    if not images:
        raise ValueError(f"no readable images in {str(directory)!r} (expected <class>/<image> files)")
    return torch.from_numpy(np.stack(images)), torch.tensor(labels)


def _seeded_split(samples: list, *, train: bool, val_fraction: float, seed: int) -> list:
    by_class: dict[int, list] = {}
    for sample in samples:
        by_class.setdefault(sample[1], []).append(sample)
    rng = random.Random(seed)
    chosen = []
    for label in sorted(by_class):
        members = by_class[label]
        rng.shuffle(members)
        n_val = max(1, round(len(members) * val_fraction)) if len(members) > 1 else 0
        chosen.extend(members[n_val:] if train else members[:n_val])
    return sorted(chosen)


def load_image_folder(
    data_dir: str | Path | None,
    *,
    train: bool,
    augment: bool,
    seed: int = 0,
    image_size: int | None = None,
    val_fraction: float = 0.1,
) -> tuple[ImageDataset, DatasetInfo]:
    """One split of a class-per-subfolder image collection.

    Args:
        data_dir: the collection's root (see the module docstring for the two layouts).
        train: the training split or the validation split.
        augment: random crop with size/8 padding and horizontal flips.
        seed: seed of the augmentation and of the train/validation split (single-pool layout).
        image_size: square side in pixels after resizing. Default: 64.
        val_fraction: share of each class held out for validation in the single-pool layout.

    Example:
        >>> import tempfile, pathlib
        >>> from PIL import Image
        >>> root = pathlib.Path(tempfile.mkdtemp())
        >>> for index in range(6):
        ...     (root / f"class{index % 2}").mkdir(exist_ok=True)
        ...     Image.new("RGB", (20, 10), (index * 40, 0, 0)).save(root / f"class{index % 2}" / f"{index}.png")
        >>> data, info = load_image_folder(root, train=True, augment=False, image_size=8, val_fraction=0.34)
        >>> len(data), data[0][0].shape, info.classes
        (4, torch.Size([3, 8, 8]), ('class0', 'class1'))
    """
    if data_dir is None:
        raise ValueError("data_dir is required for 'imagefolder': a folder with one subfolder of images per class")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be between 0 and 1 (exclusive), got {val_fraction}")
    root = Path(data_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder not found: data_dir={str(data_dir)!r} is not a directory")
    image_size = image_size or DEFAULT_IMAGE_SIZE
    validation = next((root / name for name in VALIDATION_NAMES if (root / name).is_dir()), None)
    if (root / "train").is_dir() and validation is not None:
        samples, classes = find_image_files(root / "train")
        if not train:
            samples, _ = find_image_files(validation, classes)
        directory = root / "train" if train else validation
    else:
        directory = root / "train" if (root / "train").is_dir() else root
        samples, classes = find_image_files(directory)
        samples = _seeded_split(samples, train=train, val_fraction=val_fraction, seed=seed)
    if not classes:
        raise FileNotFoundError(
            f"no class subfolders in data_dir={str(data_dir)!r}: expected <class>/<image> files, or train/ and val/ "
            "folders laid out that way"
        )
    if len(classes) < 2:
        raise ValueError(
            f"data_dir={str(data_dir)!r} has one class folder, {classes[0]!r}: a classifier needs two classes or more"
        )
    if not samples:
        why = "its class folders hold no images" if directory == validation else (
            f"too few images per class to split them with val_fraction={val_fraction} (a class needs 2 or more)"
        )  # fmt: skip
        raise ValueError(f"the {'training' if train else 'validation'} split of {str(directory)!r} is empty: {why}")
    images, labels = _decode(samples, image_size, directory)
    info = DatasetInfo("imagefolder", len(classes), 3, image_size, MEAN, STD, classes)
    return make_image_dataset(images, labels, info, augment=augment, seed=seed)
