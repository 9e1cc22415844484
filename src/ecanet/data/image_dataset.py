"""An in-memory image classification dataset: a uint8 image tensor, labels and a transform."""

from __future__ import annotations

import operator

import torch
from torch import Tensor
from torch.utils.data import Dataset

from ecanet.data.info import DatasetInfo
from ecanet.data.transforms import ImageTransform, default_padding, resize_images

__all__ = ["ImageDataset", "make_image_dataset"]


class ImageDataset(Dataset):
    """Images held as one uint8 tensor, served through an :class:`ImageTransform`.

    Small datasets (Fashion-MNIST, CIFAR, modest image folders) fit in memory comfortably, and
    keeping them as one tensor makes every data-loader worker share it instead of re-reading files.
    Call :meth:`set_epoch` before each epoch so augmentation differs between epochs.

    Args:
        images: uint8 images.
        labels: integer class labels.
        transform: augmentation and normalisation.

    Shape:
        - images: ``(N, C, H, W)``, uint8.
        - labels: ``(N,)``.
        - item: ``((C, H, W) float32, int)``.

    Example:
        >>> transform = ImageTransform(mean=(0.5,), std=(0.5,))
        >>> data = ImageDataset(torch.zeros(4, 1, 8, 8, dtype=torch.uint8), torch.tensor([0, 1, 1, 0]), transform)
        >>> image, label = data[2]
        >>> len(data), image.shape, label
        (4, torch.Size([1, 8, 8]), 1)
    """

    def __init__(self, images: Tensor, labels: Tensor, transform: ImageTransform) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"images must be a uint8 (N, C, H, W) tensor, got {images.dtype} {tuple(images.shape)}")
        if labels.shape != images.shape[:1]:
            raise ValueError(f"labels must have shape ({images.shape[0]},), got {tuple(labels.shape)}")
        self.images = images
        self.labels = labels.long()
        self.transform = transform
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Selects the augmentation of ``epoch`` (call before iterating, like ``DistributedSampler``)."""
        self.epoch = operator.index(epoch)

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        # A plain int from numpy and 0-d tensor indices too, and -1 the same image as len - 1: the
        # augmentation is seeded by the index.
        index = range(len(self))[operator.index(index)]
        return self.transform(self.images[index], index=index, epoch=self.epoch), int(self.labels[index])


def make_image_dataset(
    images: Tensor, labels: Tensor, info: DatasetInfo, *, augment: bool, seed: int, flip: bool = True
) -> tuple[ImageDataset, DatasetInfo]:
    """Wraps uint8 images in an :class:`ImageDataset`, resized to ``info.image_size`` and normalised by ``info``.

    Args:
        images: uint8 images; ``(N, H, W)`` is taken as grayscale.
        labels: class labels, in ``0 .. info.num_classes - 1``.
        info: the dataset description; its ``image_size``, ``mean`` and ``std`` are applied.
        augment: random crop with padding (and flips when ``flip``).
        seed: augmentation seed.
        flip: allow horizontal flips.

    Shape:
        - images: ``(N, C, H, W)`` or ``(N, H, W)``, uint8.
        - labels: ``(N,)``.

    Example:
        >>> info = DatasetInfo("toy", 2, 1, 16, (0.5,), (0.5,), ("a", "b"))
        >>> data, _ = make_image_dataset(torch.zeros(3, 8, 8, dtype=torch.uint8), torch.tensor([0, 1, 0]), info,
        ...                              augment=False, seed=0)
        >>> data.images.shape
        torch.Size([3, 1, 16, 16])
    """
    if labels.numel() and not 0 <= int(labels.min()) <= int(labels.max()) < info.num_classes:
        raise ValueError(
            f"{info.name}: labels must lie in 0..{info.num_classes - 1} ({info.num_classes} classes), "
            f"got {int(labels.min())}..{int(labels.max())}"
        )
    if images.dim() == 3:
        images = images.unsqueeze(1)
    images = resize_images(images, info.image_size)
    transform = ImageTransform(
        mean=info.mean, std=info.std, augment=augment, padding=default_padding(info.image_size), flip=flip, seed=seed
    )
    return ImageDataset(images, labels, transform), info
