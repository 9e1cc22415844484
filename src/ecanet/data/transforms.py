"""Seeded augmentation and normalisation of uint8 image tensors.

The random choices for a sample depend only on ``(seed, epoch, index)``, never on a global
random state: the same sample gets the same crop and flip whichever process, data-loader
worker or rank loads it, so runs are reproducible with any number of workers or GPUs.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import cached_property

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["ImageTransform", "default_padding", "resize_images"]


def default_padding(image_size: int) -> int:
    """Padding of the random crop: 4 pixels for 32-pixel images (the CIFAR convention), size/8 in general.

    Example:
        >>> default_padding(32), default_padding(28), default_padding(224)
        (4, 3, 28)
    """
    return max(1, image_size // 8)


@dataclass(frozen=True)
class ImageTransform:
    """Turns a uint8 ``(C, H, W)`` image into a normalised float tensor, with optional augmentation.

    Augmentation is a random crop from the image zero-padded by ``padding`` pixels on every side,
    then a horizontal flip with probability 1/2 when ``flip`` is true.

    Args:
        mean: per-channel mean of pixel values in [0, 1].
        std: per-channel standard deviation of pixel values in [0, 1].
        augment: apply the random crop and flip.
        padding: crop padding in pixels.
        flip: allow horizontal flips (sensible for photos and clothing, not for digits or text).
        seed: base seed of the augmentation.

    Shape:
        - Input: ``(C, H, W)``, uint8.
        - Output: ``(C, H, W)``, float32.

    Example:
        >>> transform = ImageTransform(mean=(0.5,), std=(0.5,), augment=True, padding=2, flip=True, seed=0)
        >>> image = torch.full((1, 8, 8), 255, dtype=torch.uint8)
        >>> out = transform(image, index=3, epoch=0)
        >>> out.shape, out.dtype, round(out.max().item(), 4)
        (torch.Size([1, 8, 8]), torch.float32, 1.0)
        >>> torch.equal(out, transform(image, index=3, epoch=0))
        True
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: bool = False
    padding: int = 4
    flip: bool = True
    seed: int = 0

    def __call__(self, image: Tensor, *, index: int, epoch: int) -> Tensor:
        if self.augment:
            image = self._augment(image, random.Random((self.seed << 64) | (epoch << 32) | index))
        scale, shift = self._affine
        return torch.addcmul(shift, image.float(), scale)

    @cached_property
    def _affine(self) -> tuple[Tensor, Tensor]:
        """``(x / 255 - mean) / std`` as ``x * scale + shift``, per channel, computed once."""
        mean = torch.tensor(self.mean, dtype=torch.float64).view(-1, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float64).view(-1, 1, 1)
        return (1.0 / (255.0 * std)).float(), (-mean / std).float()

    def _augment(self, image: Tensor, rng: random.Random) -> Tensor:
        pad = self.padding
        height, width = image.shape[-2:]
        top, left = rng.randint(0, 2 * pad), rng.randint(0, 2 * pad)
        image = F.pad(image, (pad, pad, pad, pad))[:, top : top + height, left : left + width]
        if self.flip and rng.random() < 0.5:
            image = image.flip(-1)
        return image


_RESIZE_CHUNK = 1024
"""Images resized at once: their float32 copies stay small (12 MiB at 3x32x32 -> 3x56x56)."""


def resize_images(images: Tensor, size: int) -> Tensor:
    """Resizes a uint8 batch ``(N, C, H, W)`` to ``(N, C, size, size)`` (bilinear, antialiased).

    Args:
        images: uint8 images.
        size: output side in pixels.

    Shape:
        - Input: ``(N, C, H, W)``, uint8.
        - Output: ``(N, C, size, size)``, uint8.

    Example:
        >>> resize_images(torch.zeros(2, 1, 28, 28, dtype=torch.uint8), 32).shape
        torch.Size([2, 1, 32, 32])
    """
    if images.shape[-2:] == (size, size):
        return images
    resized = images.new_empty((*images.shape[:-2], size, size))
    for start in range(0, images.shape[0], _RESIZE_CHUNK):  # float32 copies of a chunk, not of the dataset
        chunk = images[start : start + _RESIZE_CHUNK].float()
        chunk = F.interpolate(chunk, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        resized[start : start + _RESIZE_CHUNK] = chunk.round_().clamp_(0, 255)
    return resized
