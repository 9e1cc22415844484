"""The fast path's four large-pass kernels written with ATen operators: correct on CPU and CUDA.

Each works on ``(N, C, S)`` views (see :mod:`ecanet.ops.views`) that share one memory layout, and
writes into buffers the caller owns, so the only large allocations are the ones the caller makes.
Every function is one or two large ATen operations (no Python loops over chunks).
:class:`ecanet.ops.composed.ComposedKernels` turns them into a backend. On CPU they are the
fallback when the compiled kernels (:mod:`ecanet.ops.cpu_kernels`) cannot be built.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["channel_sum", "gated_channel_dot", "input_grad", "scale_shift"]


def _accumulate_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.promote_types(dtype, torch.float32)


def channel_sum(x3: Tensor) -> Tensor:
    """Per-channel sums of ``x3`` in one read, accumulated in float32 (float64 stays float64).

    A product with a vector of ones: the matrix-multiply kernels read channels-first and
    channels-last memory alike at full bandwidth, where a strided ``sum`` does not, and they
    accumulate bfloat16 in float32 (the sum is then rounded once to bfloat16, well within the
    input's own precision). float16 takes ATen's float32-accumulating ``sum``.

    Args:
        x3: ``(N, C, S)`` view.

    Returns:
        ``(N, C)`` sums in float32 (float64 for float64 input).

    Example:
        >>> channel_sum(torch.ones(2, 3, 5))
        tensor([[5., 5., 5.],
                [5., 5., 5.]])
    """
    if x3.dtype == torch.float16:
        # A float16 result would overflow past 65504; no fast float32-output kernel takes float16.
        return x3.sum(2, dtype=torch.float32)
    ones = x3.new_ones(x3.shape[2])
    return torch.matmul(ones, x3.transpose(1, 2)).to(_accumulate_dtype(x3.dtype))


def scale_shift(x3: Tensor, gate: Tensor, identity3: Tensor | None, relu: bool, out3: Tensor) -> None:
    """Writes ``act(x3 * gate + identity3)`` into ``out3`` (which may be ``x3`` itself).

    Args:
        x3: ``(N, C, S)`` input.
        gate: ``(N, C)`` attention weights.
        identity3: ``(N, C, S)`` shortcut or ``None``.
        relu: apply ReLU, else no activation.
        out3: ``(N, C, S)`` destination.

    Example:
        >>> x = torch.ones(1, 2, 3)
        >>> scale_shift(x, torch.tensor([[0.5, 2.0]]), -torch.ones(1, 2, 3), True, x)
        >>> x
        tensor([[[0., 0., 0.],
                 [1., 1., 1.]]])
    """
    weights = gate.to(x3.dtype).unsqueeze(-1)
    if identity3 is None:
        torch.mul(x3, weights, out=out3)
    else:
        torch.addcmul(identity3, x3, weights, out=out3)
    if relu:
        out3.relu_()


def gated_channel_dot(
    grad3: Tensor, x3: Tensor, out3: Tensor | None, masked3: Tensor | None, scratch3: Tensor
) -> Tensor:
    """Per-channel ``sum_s g * x`` with ``g = grad3`` masked by ``out3 > 0`` when ReLU was applied.

    The product goes through ``scratch3``, a full-size buffer the caller is about to overwrite
    anyway (the input gradient's), so no temporary is allocated and the whole reduction is two
    large operations: few large operations stay fast when the machine's cores are shared, where
    chunk-by-chunk loops of medium ones wait on thread wake-ups for every chunk.

    Args:
        grad3: ``(N, C, S)`` gradient of the output.
        x3: ``(N, C, S)`` tensor the gate multiplied.
        out3: ``(N, C, S)`` output after ReLU (its zeros mask the gradient), or ``None`` without ReLU.
        masked3: ``(N, C, S)`` buffer receiving the masked gradient (needed when ``out3`` is given).
        scratch3: ``(N, C, S)`` buffer laid out like ``x3`` whose contents may be destroyed.

    Returns:
        ``(N, C)`` sums, float32 for half types.

    Example:
        >>> grad, x = torch.ones(1, 2, 3), torch.arange(6.0).view(1, 2, 3)
        >>> gated_channel_dot(grad, x, None, None, torch.empty(1, 2, 3))
        tensor([[ 3., 12.]])
    """
    if out3 is not None:
        if masked3 is None:
            raise ValueError("gated_channel_dot needs masked3 (a buffer for the masked gradient) when out3 is given")
        torch.ops.aten.threshold_backward.grad_input(grad3, out3, 0, grad_input=masked3)
        grad3 = masked3
    return channel_sum(torch.mul(grad3, x3, out=scratch3))


def input_grad(grad3: Tensor, gate: Tensor, shift: Tensor, dx3: Tensor) -> None:
    """Writes ``grad3 * gate + shift`` (both broadcast over ``S``) into ``dx3`` in one pass.

    Args:
        grad3: ``(N, C, S)`` (masked) output gradient; ``dx3`` may be the same buffer.
        gate: ``(N, C)`` attention weights.
        shift: ``(N, C)`` gradient reaching every position through the pooled mean.
        dx3: ``(N, C, S)`` destination.

    Example:
        >>> dx = torch.empty(1, 2, 2)
        >>> input_grad(torch.ones(1, 2, 2), torch.tensor([[0.5, 1.0]]), torch.tensor([[1.0, 0.0]]), dx)
        >>> dx
        tensor([[[1.5000, 1.5000],
                 [1.0000, 1.0000]]])
    """
    dtype = dx3.dtype
    torch.addcmul(shift.to(dtype).unsqueeze(-1), grad3, gate.to(dtype).unsqueeze(-1), out=dx3)
