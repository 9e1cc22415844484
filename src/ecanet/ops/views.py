"""Seeing an N-D activation as ``(N, C, S)`` without copying, for channels-first and channels-last memory."""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["channel_geometry", "channel_view", "required_channel_geometry", "same_layout"]


def channel_geometry(x: Tensor, channel_dim: int) -> tuple[int, int, int, int, int, int] | None:
    """Sizes and strides ``(n, c, s, sn, sc, ss)`` of ``x`` seen as ``(N, C, S)``, or ``None``.

    ``S`` is the product of the other dims. The geometry exists when ``x``'s memory is dense in the
    order ``(N, C, rest)`` (contiguous ``(N, C, *spatial)`` tensors: ``ss == 1``) or ``(N, rest, C)``
    (channels-last memory such as ``torch.channels_last``, and contiguous ``(N, *, C)`` tokens:
    ``sc == 1``). Other strides (slices, transposes, broadcasts) give ``None``: the caller falls
    back to the plain operators. Worked out from sizes and strides alone, so kernels that take
    strides need no view (:func:`channel_view` makes one).

    Args:
        x: tensor with at least 3 dims.
        channel_dim: ``1`` or ``-1``.

    Example:
        >>> channel_geometry(torch.zeros(2, 8, 4, 4), 1)
        (2, 8, 16, 128, 16, 1)
        >>> channel_geometry(torch.zeros(2, 8, 4, 4).to(memory_format=torch.channels_last), 1)
        (2, 8, 16, 128, 1, 8)
        >>> channel_geometry(torch.zeros(2, 8, 4, 4)[:, :, ::2], 1) is None
        True
    """
    shape = x.shape
    channel = 1 if channel_dim == 1 else len(shape) - 1
    n, c = shape[0], shape[channel]
    s = x.numel() // (n * c) if n * c else _positions(shape, channel)
    first, last = (n, c, s, c * s, s, 1), (n, c, s, c * s, 1, c)
    if x.is_contiguous():  # the common layouts first, from flags the tensor keeps
        return first if channel == 1 else last
    if channel == 1 and len(shape) == 4 and x.is_contiguous(memory_format=torch.channels_last):
        return last
    if n * c * s == 0:  # nothing is addressed: any dense geometry will do
        return first
    strides = x.stride()
    if _dense(shape, strides, channel, channels_inner=False):
        return first
    if _dense(shape, strides, channel, channels_inner=True):
        return last
    return None


def required_channel_geometry(x: Tensor, channel_dim: int) -> tuple[int, int, int, int, int, int]:
    """:func:`channel_geometry` for a tensor that must have one (the kernels' arguments: the
    dispatcher only sends those); raises ``RuntimeError`` naming the shape and strides otherwise.

    Example:
        >>> required_channel_geometry(torch.zeros(2, 8, 4), 1)
        (2, 8, 4, 32, 4, 1)
    """
    found = channel_geometry(x, channel_dim)
    if found is None:
        raise RuntimeError(f"no (N, C, S) view for a tensor of shape {list(x.shape)} and strides {x.stride()}")
    return found


def _positions(shape: torch.Size, channel: int) -> int:
    """The product of the dims other than the batch and the channel dim."""
    return math.prod(size for d, size in enumerate(shape) if d not in (0, channel))


def _dense(shape: torch.Size, strides: tuple[int, ...], channel: int, channels_inner: bool) -> bool:
    """Whether the memory is dense in the order ``(N, rest, C)`` (``channels_inner``) or ``(N, C, rest)``:
    from the innermost dim out, every dim longer than 1 strides over the elements inside it."""
    rest = [d for d in range(len(shape) - 1, 0, -1) if d != channel]
    order = [channel, *rest, 0] if channels_inner else [*rest, channel, 0]
    inside = 1
    for d in order:
        if shape[d] != 1 and strides[d] != inside:
            return False
        inside *= shape[d]
    return True


def channel_view(x: Tensor, channel_dim: int) -> Tensor:
    """``x`` as a 3-D view ``(N, C, S)`` with the strides of :func:`channel_geometry`; raises
    ``RuntimeError`` where there is none (see :func:`required_channel_geometry`).

    Args:
        x: tensor with at least 3 dims.
        channel_dim: ``1`` or ``-1``.

    Shape:
        - Input: ``(N, C, *)`` (``channel_dim=1``) or ``(N, *, C)`` (``channel_dim=-1``)
        - Output: ``(N, C, S)``

    Example:
        >>> channel_view(torch.zeros(2, 8, 4, 4), 1).stride()
        (128, 16, 1)
        >>> channel_view(torch.zeros(2, 8, 4, 4).to(memory_format=torch.channels_last), 1).stride()
        (128, 1, 8)
    """
    geometry = required_channel_geometry(x, channel_dim)
    return x.as_strided(geometry[:3], geometry[3:])


def same_layout(a: Tensor, b: Tensor) -> bool:
    """Whether ``a`` and ``b`` have the same shape and put every element at the same offset.

    Strides of size-1 dims do not count (they address nothing).

    Example:
        >>> pixel, image = torch.zeros(2, 3, 1, 1), torch.zeros(2, 3, 4, 4)
        >>> channels_last = torch.channels_last
        >>> same_layout(pixel, pixel.contiguous(memory_format=channels_last))
        True
        >>> same_layout(image, image.contiguous(memory_format=channels_last))
        False
    """
    if a.shape != b.shape:
        return False
    if a.stride() == b.stride():
        return True
    return all(size == 1 or sa == sb for size, sa, sb in zip(a.shape, a.stride(), b.stride(), strict=True))
