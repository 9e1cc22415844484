"""What a model needs to know about a dataset: classes, channels, image size, normalisation."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DatasetInfo"]


@dataclass(frozen=True)
class DatasetInfo:
    """Description of a loaded dataset.

    Args:
        name: the dataset name given to :func:`ecanet.data.load_dataset`.
        num_classes: number of classes.
        in_chans: image channels (1 for grayscale, 3 for RGB).
        image_size: side of the square images the dataset yields.
        mean: per-channel mean used for normalisation (pixel values scaled to [0, 1]).
        std: per-channel standard deviation used for normalisation.
        classes: class names, index = label.

    Example:
        >>> info = DatasetInfo("toy", 2, 1, 8, (0.5,), (0.25,), ("no", "yes"))
        >>> info.num_classes, info.classes[1]
        (2, 'yes')
    """

    name: str
    num_classes: int
    in_chans: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    classes: tuple[str, ...]
