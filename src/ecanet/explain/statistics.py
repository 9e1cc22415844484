"""Running statistics of one layer's channel gates over a dataset, per class, in float64."""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["GateStatistics"]


class GateStatistics:
    """Counts, sums and sums of squares of a layer's ``(N, C)`` gates per class, batch by batch.

    From them: the mean gate of every channel, overall and per class; how much the gates vary
    from image to image (:attr:`spread`); and how much of that variation the class explains
    (:attr:`class_share`, the correlation ratio eta squared, pooled over channels). A NaN gate
    (one that cannot be known, such as that of a channel which is zero all over an image) is left
    out of its channel's statistics.

    Args:
        channels: the gate's channel count C.
        num_classes: the number of classes K; labels are ``0 .. K-1``.

    Example:
        >>> stats = GateStatistics(channels=2, num_classes=2)
        >>> stats.update(torch.tensor([[0.2, 0.5], [0.4, 0.5], [0.6, 0.5], [0.8, 0.5]]), torch.tensor([0, 0, 1, 1]))
        >>> stats.class_means
        tensor([[0.3000, 0.5000],
                [0.7000, 0.5000]], dtype=torch.float64)
        >>> round(stats.class_share, 3)  # channel 0 is mostly class, channel 1 does not vary
        0.8
    """

    def __init__(self, channels: int, num_classes: int) -> None:
        if channels < 1 or num_classes < 1:
            raise ValueError(f"channels and num_classes must be positive, got {channels} and {num_classes}")
        self.channels = channels
        self.num_classes = num_classes
        self.class_counts = torch.zeros(num_classes, dtype=torch.float64)
        self._counts = torch.zeros(num_classes, channels, dtype=torch.float64)  # known gates
        self._sums = torch.zeros(num_classes, channels, dtype=torch.float64)
        self._squares = torch.zeros(num_classes, channels, dtype=torch.float64)

    def update(self, gates: Tensor, labels: Tensor) -> None:
        """Adds a batch.

        Args:
            gates: the layer's gates, ``(N, C)``; NaN where a gate is not known.
            labels: the images' classes, ``(N,)`` integers in ``0 .. K-1``.
        """
        if gates.dim() != 2 or gates.shape[1] != self.channels:
            raise ValueError(f"gates must have shape (N, {self.channels}), got {list(gates.shape)}")
        if labels.shape != gates.shape[:1]:
            raise ValueError(f"labels must have shape ({gates.shape[0]},), got {list(labels.shape)}")
        labels = labels.to("cpu", torch.long)
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
            raise ValueError(f"labels must lie in 0 .. {self.num_classes - 1}, got {labels.min()} .. {labels.max()}")
        values = gates.detach().to("cpu", torch.float64)
        known = ~values.isnan()
        values = values.where(known, 0.0)
        self.class_counts.index_add_(0, labels, torch.ones(labels.shape[0], dtype=torch.float64))
        self._counts.index_add_(0, labels, known.double())
        self._sums.index_add_(0, labels, values)
        self._squares.index_add_(0, labels, values.square())

    @property
    def count(self) -> int:
        """The number of images seen."""
        return int(self.class_counts.sum())

    @property
    def mean(self) -> Tensor:
        """Mean gate of every channel over all images, ``(C,)``; NaN for a channel never known."""
        return self._sums.sum(0) / self._counts.sum(0)

    @property
    def class_means(self) -> Tensor:
        """Mean gate of every channel per class, ``(K, C)``; NaN for a class without images."""
        return self._sums / self._counts

    def _channel_sums_of_squares(self) -> tuple[Tensor, Tensor, Tensor]:
        """Per channel: the known gates, and their squared deviations from the channel's mean in total
        and between classes."""
        counts = self._counts.sum(0)
        seen = counts > 0
        mean = self.mean.where(seen, 0.0)
        total = (self._squares.sum(0) - counts * mean.square()).clamp_min(0)
        deviations = (self.class_means - mean).square().nan_to_num(0.0)  # classes without known gates
        between = (self._counts * deviations).sum(0)
        return counts, total, between

    @property
    def spread(self) -> float:
        """How much the gates change from image to image: each channel's standard deviation over the
        images, root-mean-squared over the channels (each weighted by its known gates); 0 when no
        gate is known."""
        counts, total, _ = self._channel_sums_of_squares()
        return math.sqrt(float(total.sum()) / max(float(counts.sum()), 1.0))

    @property
    def class_share(self) -> float:
        """The share of the gates' variance over images that the class explains (between-class sum of
        squares over total, summed over channels): 0 when every class gets the same gates on
        average, 1 when the gates depend on the class only. 0 when the gates do not vary."""
        _, total, between = self._channel_sums_of_squares()
        denominator = float(total.sum())
        return min(float(between.sum()) / denominator, 1.0) if denominator > 0 else 0.0

    @property
    def chance_class_share(self) -> float:
        """The :attr:`class_share` expected when the gates do not depend on the class at all:
        ``(K' - 1) / (N - 1)`` for ``K'`` classes present among ``N`` images."""
        present = int((self.class_counts > 0).sum())
        return (present - 1) / (self.count - 1) if self.count > 1 else 0.0
