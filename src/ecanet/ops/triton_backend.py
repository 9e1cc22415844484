"""The CUDA backend: :mod:`ecanet.ops.triton_kernels` as :class:`~ecanet.ops.function.EcaKernels`.

The forward is two launches whatever the kernel size: the pooled mean (one reading pass), then the
rescale pass with the gate computed inside it (:func:`ecanet.ops.triton_kernels.eca_forward`).
The backward is two as well: the fused ``sum(grad * x)`` reduction, then the input-gradient pass
with the gate's backward computed inside it (:func:`ecanet.ops.triton_kernels.eca_backward`). On a
GPU the host's time per launch and per operator call is what a small layer costs: the gate in
torch operators took ten-odd launches forward and twenty-odd backward (re-run under autograd,
inside autograd's own backward), which measured 1.8 ms per training step of a 32x2048x7x7 layer on
an H200 against 0.2 ms for timm's four-operator layer.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ecanet.ops import triton_kernels
from ecanet.ops.triton_kernels import TrainingPlans

__all__ = ["TritonKernels"]


class TritonKernels:
    """:class:`ecanet.ops.function.EcaKernels` for CUDA tensors, in Triton.

    Args:
        plans: the launches of every call planned already
            (:func:`~ecanet.ops.triton_kernels.training_plans`), for a caller whose calls all share
            one geometry, kernel shape, dtype, device and set of options (a prepared call, whose
            key fixes them: :mod:`ecanet.ops.prepared_calls`; the autograd Function lays the output
            gradient out like the input); ``None``: the geometry worked out, the operands' layouts
            checked and the launches planned on each call.

    Example:
        >>> TritonKernels()
        TritonKernels()
    """

    def __init__(self, plans: TrainingPlans | None = None) -> None:
        self.plans = plans

    def __repr__(self) -> str:
        return "TritonKernels()" if self.plans is None else "TritonKernels(planned)"

    def mean(self, x: Tensor, channel_dim: int) -> Tensor:
        return triton_kernels.channel_mean(x, channel_dim)

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
        if self.plans is not None:
            return self.plans.forward(x, weight, identity, out, known_mean)
        shape = triton_kernels.geometry(x, channel_dim, identity, out)
        return triton_kernels.eca_forward(shape, x, weight, identity, relu, padding, gate, out, known_mean)

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
        if self.plans is not None:
            plan = self.plans.backward_in_place if inplace else self.plans.backward
            return plan(grad, saved, relu_out, mean, gate, weight, identity, masked, dx)
        shape = triton_kernels.geometry(grad, channel_dim, saved, relu_out, identity, masked, dx)
        return triton_kernels.eca_backward(
            shape, grad, saved, relu_out, mean, gate, weight, padding, gate_kind, inplace, identity, masked, dx
        )
