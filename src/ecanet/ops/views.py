"""Seeing an N-D activation as ``(N, C, S)`` without copying, for channels-first and channels-last memory."""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["channel_view"]


def channel_view(x: Tensor, channel_dim: int) -> Tensor | None:
    """``x`` as a 3-D view ``(N, C, S)``, ``S`` the product of the other dims, or ``None``.

    The view exists when all non-channel, non-batch dims collapse into one stride, which holds for
    contiguous ``(N, C, *spatial)`` tensors (``S`` stride 1), for channels-last ones (``C`` stride
    1, e.g. ``torch.channels_last``) and for contiguous ``(N, *, C)`` tokens. Other strides (slices,
    transposes, broadcasts) give ``None``: the caller falls back to the plain operators.

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
        >>> channel_view(torch.zeros(2, 8, 4, 4)[:, :, ::2], 1) is None
        True
    """
    if x.numel():  # the common layouts first, without intermediate views
        if x.is_contiguous():
            if channel_dim == 1:
                return x.view(x.shape[0], x.shape[1], -1)
            if x.dim() == 3:  # (N, L, C) tokens
                return x.transpose(1, 2)
        elif channel_dim == 1 and x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
            n, c, h, w = x.shape
            return x.as_strided((n, c, h * w), (h * w * c, 1, c))
    return _any_dense_view(x, channel_dim)


def _any_dense_view(x: Tensor, channel_dim: int) -> Tensor | None:
    moved = x.movedim(channel_dim, 1) if channel_dim != 1 else x
    n, c = moved.shape[0], moved.shape[1]
    s = math.prod(moved.shape[2:])  # explicit: an empty tensor has no -1 to infer
    if moved.is_contiguous():
        return moved.view(n, c, s)
    channels_inner = moved.movedim(1, -1)
    if channels_inner.is_contiguous():
        return channels_inner.view(n, s, c).transpose(1, 2)
    return None
