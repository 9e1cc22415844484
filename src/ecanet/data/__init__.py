"""Datasets for training and experiments: the embedded Fashion-MNIST subset, full Fashion-MNIST,
image folders and CIFAR, all as in-memory uint8 tensors with seeded augmentation.

Example:
    >>> from ecanet.data import load_dataset
    >>> data, info = load_dataset("fashion-mnist", train=True, augment=True, seed=1)
    >>> len(data), info.num_classes
    (12000, 10)
"""

from ecanet.data.image_dataset import ImageDataset
from ecanet.data.info import DatasetInfo
from ecanet.data.registry import DATASETS, load_dataset
from ecanet.data.transforms import ImageTransform

__all__ = ["DATASETS", "DatasetInfo", "ImageDataset", "ImageTransform", "load_dataset"]
