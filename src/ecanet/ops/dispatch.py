"""Chooses between the fast path and the plain operators, and between the kernel backends."""

from __future__ import annotations

import functools
import importlib.util
from types import ModuleType

import torch
from torch import Tensor

from ecanet.ops import aten_kernels
from ecanet.ops.function import GateFunction, fused_eca_forward, fused_eca_function
from ecanet.ops.views import channel_view

__all__ = ["fast_eca", "kernels_for", "use_plain_operators"]

_FLOATING = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def use_plain_operators() -> bool:
    """Whether the caller is being scripted, traced, compiled, exported or transformed: then only plain ops will do.

    TorchScript, ``torch.jit.trace`` (and the ONNX exporter built on it), ``torch.compile`` and
    ``torch.export`` (and the ONNX exporter built on it) all record the operators a function runs;
    the fast path's buffers and ``out=`` calls would either not be recordable or hide the arithmetic
    from the compiler, which fuses the plain operators by itself. ``torch.func`` transforms
    (``vmap``, ``grad``, ...) have no batching rules for ``out=`` calls.

    Example:
        >>> use_plain_operators()
        False
    """
    return (
        torch.jit.is_scripting()
        or torch.jit.is_tracing()
        or torch.compiler.is_compiling()
        or torch.onnx.is_in_onnx_export()
        or torch._C._are_functorch_transforms_active()
    )


@functools.cache
def _triton_available() -> bool:
    return importlib.util.find_spec("triton") is not None


def kernels_for(x: Tensor) -> ModuleType | None:
    """The kernel backend for ``x``'s device: Triton on CUDA when installed, ATen ops on CPU/CUDA.

    Returns ``None`` for other devices (the plain operators run there).

    Example:
        >>> kernels_for(torch.zeros(1)).__name__
        'ecanet.ops.aten_kernels'
    """
    if x.device.type == "cuda" and _triton_available():
        from ecanet.ops import triton_kernels

        return triton_kernels
    if x.device.type in ("cpu", "cuda"):
        return aten_kernels
    return None


def fast_eca(
    x: Tensor,
    weight: Tensor,
    identity: Tensor | None,
    relu: bool,
    inplace: bool,
    gate_fn: GateFunction,
    channel_dim: int,
) -> Tensor | None:
    """``act(x * gate_fn(mean(x), weight) + identity)`` on the fast path, or ``None`` to fall back.

    Inputs must already be validated (as :func:`ecanet.functional.eca` does). The fast path runs
    when nothing is recording operators (:func:`use_plain_operators`), ``x`` is a plain
    floating-point CPU or CUDA tensor whose memory is channels-first or channels-last dense, and
    ``identity`` (if any) has ``x``'s dtype and strides. Without an autograd graph to build the
    kernels run directly; otherwise through the fused autograd Function.

    Args:
        x: input ``(N, C, *)`` or ``(N, *, C)``.
        weight: ECA kernel.
        identity: shortcut to add, or ``None``.
        relu: apply ReLU at the end.
        inplace: write the result into ``x``. With an autograd graph to build and an ``identity``,
            the result goes to a new tensor instead (the backward needs ``x``).
        gate_fn: ``(descriptor, weight) -> gate`` on ``(N, C)``.
        channel_dim: ``1`` or ``-1``.

    Returns:
        The result, or ``None`` when the plain operators must run.

    Example:
        >>> gate_fn = lambda d, w: torch.sigmoid(d * w.flatten()[0])
        >>> x = torch.randn(2, 4, 3, 3)
        >>> out = fast_eca(x, torch.ones(1, 1, 1), None, False, False, gate_fn, 1)
        >>> torch.allclose(out, x * torch.sigmoid(x.mean((2, 3), keepdim=True)))
        True
    """
    if use_plain_operators() or torch.overrides.has_torch_function((x, weight)):
        return None
    if x.dtype not in _FLOATING or channel_view(x, channel_dim) is None:
        return None
    if identity is not None and (
        identity.dtype != x.dtype
        or identity.device != x.device
        or identity.stride() != x.stride()
        or torch.overrides.has_torch_function((identity,))
    ):
        return None
    kernels = kernels_for(x)
    if kernels is None:
        return None
    needs_graph = torch.is_grad_enabled() and (
        x.requires_grad or weight.requires_grad or (identity is not None and identity.requires_grad)
    )
    if needs_graph:
        return fused_eca_function(
            x, weight, identity, relu, inplace and identity is None, gate_fn, channel_dim, kernels
        )
    out = x if inplace else torch.empty_like(x)
    with torch.no_grad():
        fused_eca_forward(x, weight, identity, relu, gate_fn, channel_dim, out, kernels)
    return out
