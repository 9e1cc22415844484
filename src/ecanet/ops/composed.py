"""A backend composed of four large-pass kernels and the gate in plain torch operators.

Wraps :mod:`ecanet.ops.aten_kernels` (CPU when the compiled kernels are unavailable, CUDA without
Triton) into the :class:`ecanet.ops.function.EcaKernels` contract. The gate's gradient comes from
re-running the tiny ``(N, C)`` gate graph under autograd.
"""

from __future__ import annotations

from types import ModuleType

import torch
from torch import Tensor

from ecanet.ops.channel_gate import channel_gate
from ecanet.ops.views import channel_view

__all__ = ["ComposedKernels"]


class ComposedKernels:
    """:class:`ecanet.ops.function.EcaKernels` from a module with ``channel_sum``, ``scale_shift``,
    ``gated_channel_dot`` and ``input_grad`` (the contract of :mod:`ecanet.ops.aten_kernels`).

    Args:
        kernels: the kernel module.

    Example:
        >>> from ecanet.ops import aten_kernels
        >>> x = torch.ones(1, 3, 2, 2)
        >>> mean, gate = ComposedKernels(aten_kernels).forward(x, torch.zeros(1, 1, 3), None, False,
        ...                                                    "zeros", "sigmoid", x, 1)
        >>> x[0, :, 0, 0]
        tensor([0.5000, 0.5000, 0.5000])
    """

    def __init__(self, kernels: ModuleType) -> None:
        self.kernels = kernels

    def __repr__(self) -> str:
        return f"ComposedKernels({self.kernels.__name__})"

    def mean(self, x: Tensor, channel_dim: int) -> Tensor:
        x3 = channel_view(x, channel_dim)
        return self.kernels.channel_sum(x3) / x3.shape[2]

    def empty_like(self, like: Tensor) -> Tensor:
        return torch.empty_like(like)

    def forward(
        self,
        x: Tensor,
        weight: Tensor,
        identity: Tensor | None,
        relu: bool,
        padding: str,
        gate: str,
        out: Tensor,
        channel_dim: int,
        known_mean: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        mean = self.mean(x, channel_dim) if known_mean is None else known_mean
        gates = channel_gate(mean, weight, padding, gate)
        x3, out3 = channel_view(x, channel_dim), channel_view(out, channel_dim)
        self.kernels.scale_shift(x3, gates, _optional_channel_view(identity, channel_dim), relu, out3)
        return mean, gates

    def backward(
        self,
        grad: Tensor,
        saved: Tensor,
        relu_out: Tensor | None,
        mean: Tensor,
        gate: Tensor,
        weight: Tensor,
        padding: str,
        gate_kind: str,
        inplace: bool,
        identity: Tensor | None,
        masked: Tensor | None,
        dx: Tensor | None,
        channel_dim: int,
    ) -> Tensor:
        grad3, saved3 = channel_view(grad, channel_dim), channel_view(saved, channel_dim)
        relu_out3 = _optional_channel_view(relu_out, channel_dim)
        masked3 = _optional_channel_view(masked, channel_dim)
        if relu_out3 is not None and masked3 is None:
            masked3 = torch.empty_like(grad3)  # the input-gradient kernel reads the masked gradient
        # The input gradient's buffer serves as scratch for the gate-gradient product first.
        scratch3 = channel_view(dx, channel_dim) if dx is not None else torch.empty_like(grad3)
        if identity is not None:  # in place: x * gate = output - identity
            saved3 = torch.sub(saved3, channel_view(identity, channel_dim), out=scratch3)
        sums = self.kernels.gated_channel_dot(grad3, saved3, relu_out3, masked3, scratch3)
        shift, d_weight = self.gate_backward(sums, gate, mean, weight, padding, gate_kind, inplace, grad3.shape[2])
        if dx is not None:
            masked_grad3 = masked3 if relu_out3 is not None else grad3
            self.kernels.input_grad(masked_grad3, gate, shift, scratch3)
        return d_weight

    def gate_backward(
        self,
        d_gate: Tensor,
        gate: Tensor,
        mean: Tensor,
        weight: Tensor,
        padding: str,
        gate_kind: str,
        inplace: bool,
        positions: int,
    ) -> tuple[Tensor, Tensor]:
        """``(dL/dmean / S, dL/dweight)`` from the gate's gradient ``d_gate`` (in place: times the
        gate), by re-running the gate's few torch operators on ``(N, C)`` under autograd."""
        if inplace:
            # sum(grad * out) = gate * sum(grad * x); where the gate is exactly 0 both gates
            # (sigmoid, hard sigmoid) have zero derivative, so that channel's gradient is 0.
            d_gate = torch.where(gate == 0, torch.zeros_like(d_gate), d_gate / gate)
        with torch.enable_grad():
            mean = mean.detach().requires_grad_(True)
            kernel = weight.detach().requires_grad_(True)
            d_mean, d_weight = torch.autograd.grad(
                channel_gate(mean, kernel, padding, gate_kind), (mean, kernel), d_gate.to(gate.dtype)
            )
        return d_mean / positions, d_weight


def _optional_channel_view(x: Tensor | None, channel_dim: int) -> Tensor | None:
    return None if x is None else channel_view(x, channel_dim)
