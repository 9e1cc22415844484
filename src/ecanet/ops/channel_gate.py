"""The gate on a ``(N, C)`` descriptor in plain torch operators: k-tap channel convolution, then sigmoid.

Unchecked arithmetic shared by :mod:`ecanet.functional` (which validates arguments first) and the
fast path's composed backends (:mod:`ecanet.ops.composed`). TorchScript compiles it as part of
``ecanet.functional``, so it keeps to the TorchScript subset.
"""

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["channel_conv", "channel_gate"]


def channel_conv(descriptor: Tensor, weight: Tensor, padding: str) -> Tensor:
    """``out[n, c] = sum_j weight[c or 0, 0, j] * padded[n, c + j]`` as k shifted multiply-adds.

    Args:
        descriptor: ``(N, C)``.
        weight: ``[1, 1, k]`` or ``[C, 1, k]`` with ``k`` odd (not checked).
        padding: ``"zeros"`` or ``"circular"`` (not checked; ``k // 2 <= C`` for circular).

    Example:
        >>> channel_conv(torch.ones(1, 4), torch.ones(1, 1, 3), "zeros")
        tensor([[2., 3., 3., 2.]])
    """
    channels = descriptor.shape[1]
    k = weight.shape[2]
    half = k // 2
    taps = weight.to(descriptor.dtype).reshape(weight.shape[0], k)
    if half == 0:
        return descriptor * taps[:, 0]
    if padding == "zeros":
        padded = F.pad(descriptor, [half, half])
    else:
        padded = torch.cat([descriptor[:, channels - half :], descriptor, descriptor[:, :half]], dim=1)
    out = padded[:, 0:channels] * taps[:, 0]
    for j in range(1, k):
        out = torch.addcmul(out, padded[:, j : j + channels], taps[:, j])
    return out


def channel_gate(descriptor: Tensor, weight: Tensor, padding: str, gate: str) -> Tensor:
    """The attention weights: :func:`channel_conv`, then ``"sigmoid"`` or ``"hard_sigmoid"``.

    Example:
        >>> channel_gate(torch.zeros(1, 3), torch.ones(1, 1, 3), "zeros", "sigmoid")
        tensor([[0.5000, 0.5000, 0.5000]])
    """
    logits = channel_conv(descriptor, weight, padding)
    if gate == "sigmoid":
        return torch.sigmoid(logits)
    return F.hardsigmoid(logits)
