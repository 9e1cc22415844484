"""The fused ECA computation and its autograd Function, over one kernel backend.

Forward: one read of ``x`` for the pooled mean, a gate on the tiny ``(N, C)`` descriptor, one pass
writing ``act(x * gate + identity)``. Backward: one reduction ``sum_s(grad * x)`` for the gate
gradient (fused in Triton; on CPU a product written into the input gradient's buffer, then
summed), the tiny gate graph re-run under autograd for the descriptor and kernel gradients, and
one pass writing the input gradient ``grad * gate + d_mean / S``. Saved for backward: the input (or,
in place, the output), the ReLU output when there is one, and two ``(N, C)`` tensors.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from ecanet.ops.views import channel_view

__all__ = ["GateFunction", "fused_eca_forward", "fused_eca_function"]

GateFunction = Callable[[Tensor, Tensor], Tensor]
"""Maps a ``(N, C)`` descriptor and the ECA kernel to the ``(N, C)`` gate; differentiable."""


def _view(x: Tensor, channel_dim: int) -> Tensor:
    view = channel_view(x, channel_dim)
    if view is None:  # the dispatcher only sends tensors that have a (N, C, S) view
        raise RuntimeError(f"no (N, C, S) view for a tensor of shape {list(x.shape)} and strides {x.stride()}")
    return view


def fused_eca_forward(
    x: Tensor,
    weight: Tensor,
    identity: Tensor | None,
    relu: bool,
    gate_fn: GateFunction,
    channel_dim: int,
    out: Tensor,
    kernels: ModuleType,
) -> tuple[Tensor, Tensor]:
    """Writes ``act(x * gate_fn(mean(x), weight) + identity)`` into ``out`` (may be ``x``).

    Args:
        x: input with a ``(N, C, S)`` view.
        weight: ECA kernel passed to ``gate_fn``.
        identity: shortcut laid out like ``x``, or ``None``.
        relu: apply ReLU after the addition.
        gate_fn: descriptor and kernel -> gate.
        channel_dim: ``1`` or ``-1``.
        out: destination laid out like ``x``.
        kernels: backend module (:mod:`ecanet.ops.aten_kernels` or :mod:`ecanet.ops.triton_kernels`).

    Returns:
        ``(descriptor, gate)``, both ``(N, C)`` in float32 (float64 for float64 input).
    """
    x3 = _view(x, channel_dim)
    descriptor = kernels.channel_sum(x3) / x3.shape[2]
    gate = gate_fn(descriptor, weight)
    identity3 = None if identity is None else _view(identity, channel_dim)
    kernels.scale_shift(x3, gate, identity3, relu, _view(out, channel_dim))
    return descriptor, gate


class _FusedEca(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx,
        x: Tensor,
        weight: Tensor,
        identity: Tensor | None,
        relu: bool,
        inplace: bool,
        gate_fn: GateFunction,
        channel_dim: int,
        kernels: ModuleType,
    ) -> Tensor:
        out = x if inplace else torch.empty_like(x)
        descriptor, gate = fused_eca_forward(x, weight, identity, relu, gate_fn, channel_dim, out, kernels)
        if inplace:
            ctx.mark_dirty(x)
        # In place, x itself is gone; the output x * gate stands in for it (see backward).
        multiplied = None if inplace else x
        ctx.save_for_backward(multiplied, out if (relu or inplace) else None, descriptor, gate, weight)
        ctx.options = (relu, inplace, gate_fn, channel_dim, kernels, identity is not None)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        x, out, descriptor, gate, weight = ctx.saved_tensors
        relu, inplace, gate_fn, channel_dim, kernels, has_identity = ctx.options
        like = out if x is None else x
        if grad.stride() != like.stride():
            grad = torch.empty_like(like).copy_(grad)
        grad3 = _view(grad, channel_dim)
        masked = torch.empty_like(like) if relu else grad
        # The input gradient's buffer serves as scratch for the gate-gradient product first.
        d_x = torch.empty_like(like)
        sums = kernels.gated_channel_dot(
            grad3,
            _view(like, channel_dim),
            _view(out, channel_dim) if relu else None,
            _view(masked, channel_dim) if relu else None,
            _view(d_x, channel_dim),
        )
        if inplace:
            # sum(grad * out) = gate * sum(grad * x); where the gate is exactly 0 both gates
            # (sigmoid, hard sigmoid) have zero derivative, so that channel's gradient is 0.
            sums = torch.where(gate == 0, torch.zeros_like(sums), sums / gate)
        with torch.enable_grad():
            descriptor = descriptor.detach().requires_grad_(True)
            kernel = weight.detach().requires_grad_(ctx.needs_input_grad[1])
            inputs = (descriptor, kernel) if ctx.needs_input_grad[1] else (descriptor,)
            grads = torch.autograd.grad(gate_fn(descriptor, kernel), inputs, sums.to(gate.dtype))
        d_weight = grads[1] if ctx.needs_input_grad[1] else None
        if ctx.needs_input_grad[0]:
            shift = grads[0] / grad3.shape[2]
            kernels.input_grad(_view(masked, channel_dim), gate, shift, _view(d_x, channel_dim))
        else:
            d_x = None
        d_identity = masked if (has_identity and ctx.needs_input_grad[2]) else None
        return d_x, d_weight, d_identity, None, None, None, None, None


def fused_eca_function(
    x: Tensor,
    weight: Tensor,
    identity: Tensor | None,
    relu: bool,
    inplace: bool,
    gate_fn: GateFunction,
    channel_dim: int,
    kernels: ModuleType,
) -> Tensor:
    """Differentiable ``act(x * gate + identity)`` with the fused backward; see the module docstring.

    With ``inplace=True`` the result is written into ``x`` (marked dirty, so autograd rejects
    uses that would need the old values); in-place is not offered together with ``identity``.
    Arguments as in :func:`fused_eca_forward`.
    """
    if inplace and identity is not None:
        raise ValueError("the differentiable in-place path does not take an identity; use inplace=False")
    return _FusedEca.apply(x, weight, identity, relu, inplace, gate_fn, channel_dim, kernels)
