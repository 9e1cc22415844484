"""Chooses between the fast path and the plain operators, and between the kernel backends."""

from __future__ import annotations

import functools
import importlib.util
import os

import torch
from torch import Tensor
from torch.autograd import forward_ad

from ecanet.ops import cpu_kernels, prepared_calls
from ecanet.ops.composed import ComposedKernels
from ecanet.ops.frozen_norm import FrozenNorm
from ecanet.ops.function import (
    EcaKernels,
    count_in_place_write,
    fused_eca_function,
    records_graph,
)
from ecanet.ops.second_derivatives import inputs_kept
from ecanet.ops.views import channel_geometry, same_layout

__all__ = [
    "eager_call",
    "eager_pooled_projection",
    "fast_eca",
    "fast_mean",
    "kernels_for",
    "takes_prepared_calls",
    "use_plain_operators",
]

_FLOATING = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def use_plain_operators() -> bool:
    """Whether the caller is being scripted, traced, compiled, exported or transformed: then only plain ops will do.

    TorchScript, ``torch.jit.trace`` (and the ONNX exporter built on it, which is tracing while it
    runs the model), ``torch.compile`` and ``torch.export`` (and the ONNX exporter built on it,
    which is compiling while it runs the model) all record the operators a function runs;
    the fast path's buffers and ``out=`` calls would either not be recordable or hide the arithmetic
    from the compiler, which fuses the plain operators by itself. ``torch.func`` transforms
    (``vmap``, ``grad``, ...) have no batching rules for ``out=`` calls, and forward-mode AD
    (``torch.autograd.forward_ad``) needs the plain operators' forward derivatives.

    Example:
        >>> use_plain_operators()
        False
    """
    return (
        torch.jit.is_scripting()
        or torch.jit.is_tracing()
        or torch.compiler.is_compiling()
        or torch._C._are_functorch_transforms_active()
        or _forward_ad_active()
    )


def _forward_ad_active() -> bool:
    """Whether a ``torch.autograd.forward_ad.dual_level`` is open: dual tensors need the plain
    operators' forward derivatives, which the kernels do not have (``no_grad`` does not stop it)."""
    return forward_ad._current_level >= 0


TRITON_SWITCH = "ECANET_TRITON_KERNELS"
"""Environment variable: ``0`` makes CUDA tensors take the ATen kernels even where Triton is installed."""


@functools.cache
def _cuda_takes_triton() -> bool:
    """Whether CUDA tensors take the Triton kernels: Triton is installed and :data:`TRITON_SWITCH`
    is not ``0`` (read on the first CUDA call)."""
    return os.environ.get(TRITON_SWITCH, "1") != "0" and importlib.util.find_spec("triton") is not None


@functools.cache
def _composed(module_name: str) -> ComposedKernels:
    return ComposedKernels(importlib.import_module(module_name))


@functools.cache
def _triton_backend() -> EcaKernels:
    from ecanet.ops.triton_backend import TritonKernels

    return TritonKernels()


def kernels_for(x: Tensor) -> EcaKernels | None:
    """The kernel backend for ``x``'s device, or ``None`` for devices the fast path does not cover.

    CPU: the compiled kernels (:mod:`ecanet.ops.cpu_kernels`) when they build, else ATen
    operators. CUDA: Triton kernels when Triton is installed (and ``ECANET_TRITON_KERNELS=0`` is
    not set), else ATen operators.

    Example:
        >>> kernels_for(torch.zeros(1)) in (cpu_kernels, _composed("ecanet.ops.aten_kernels"))
        True
        >>> kernels_for(torch.zeros(1, device="meta")) is None
        True
    """
    if x.device.type == "cpu":
        return cpu_kernels if cpu_kernels.available() else _composed("ecanet.ops.aten_kernels")
    if x.device.type == "cuda":
        return _triton_backend() if _cuda_takes_triton() else _composed("ecanet.ops.aten_kernels")
    return None


def fast_eca(
    x: Tensor,
    weight: Tensor,
    identity: Tensor | None,
    relu: bool,
    inplace: bool,
    padding: str,
    gate: str,
    channel_dim: int,
    descriptor: Tensor | None = None,
) -> Tensor | None:
    """``act(x * gate(mean(x), weight) + identity)`` on the fast path, or ``None`` to fall back.

    Inputs must already be validated (as :func:`ecanet.functional.eca` does). The fast path runs
    when nothing is recording operators (:func:`use_plain_operators`), ``x`` is a plain
    floating-point CPU or CUDA tensor whose memory is channels-first or channels-last dense, and
    ``identity`` (if any) has ``x``'s dtype and layout. Without an autograd graph to build the
    kernels run directly; otherwise through the fused autograd Function.

    Args:
        x: input ``(N, C, *)`` or ``(N, *, C)``.
        weight: ECA kernel ``[1 or C, 1, k]``.
        identity: shortcut to add, or ``None``.
        relu: apply ReLU at the end.
        inplace: write the result into ``x``. With an autograd graph to build and an ``identity``,
            only when ``x`` is an intermediate float32 or float64 result that is not a view and
            the shortcut has memory of its own (the backward recovers ``x * gate`` as output minus
            shortcut); otherwise the result goes to a new tensor.
        padding: ``"zeros"`` or ``"circular"`` channel padding of the gate's convolution.
        gate: ``"sigmoid"`` or ``"hard_sigmoid"``.
        channel_dim: ``1`` or ``-1``.
        descriptor: ``x``'s pooled mean ``(N, C)`` when the caller already has it; it then
            replaces the pooling pass where no autograd graph is recorded (ignored otherwise).

    Returns:
        The result, or ``None`` when the plain operators must run.

    Example:
        >>> x = torch.randn(2, 4, 3, 3)
        >>> out = fast_eca(x, torch.zeros(1, 1, 3), None, False, False, "zeros", "sigmoid", 1)
        >>> torch.allclose(out, x * 0.5)
        True
    """
    if use_plain_operators() or torch.overrides.has_torch_function((x, weight)):
        return None
    if (
        x.dtype not in _FLOATING
        or channel_geometry(x, channel_dim) is None
        or weight.device != x.device
        or (descriptor is not None and descriptor.device != x.device)
    ):
        return None  # the plain operators run (ecanet.functional names a kernel on another device first)
    if identity is not None and (
        identity.dtype != x.dtype
        or identity.device != x.device
        or not same_layout(identity, x)
        or torch.overrides.has_torch_function((identity,))
    ):
        return None
    kernels = kernels_for(x)
    if kernels is None:
        return None
    graph = records_graph(x, weight, identity)
    if graph:
        out = fused_eca_function(x, weight, identity, relu, inplace, padding, gate, channel_dim, kernels)
    else:  # no graph to record: the kernels run directly (they have no autograd formula of their own)
        if inplace and x.is_inference() and not torch.is_inference_mode_enabled():
            return None  # the plain in-place operator raises ATen's error for this
        out = x if inplace else kernels.empty_like(x)
        kernels.forward(x, weight, identity, relu, padding, gate, out, channel_dim, descriptor)
        if inplace:
            count_in_place_write(x)
    if kernels is _triton_backend():  # later calls like this one may skip the checks (on CUDA, see eager_call)
        prepared_calls.remember(x, weight, identity, descriptor, relu, inplace, padding, gate, channel_dim)
    return out


def _operators_must_be_seen(tensors: tuple[Tensor | None, ...]) -> bool:
    """Whether one opaque C++ step will not do: :func:`use_plain_operators`, or ``__torch_function__``
    overrides (the C++ steps rule out dispatch modes and tensor subclasses themselves)."""
    return use_plain_operators() or torch._C._has_torch_function(tensors)


def takes_prepared_calls(x: Tensor) -> bool:
    """Whether eager calls on ``x`` are served by :mod:`ecanet.ops.prepared_calls`: CUDA tensors,
    whose host time per call is what ECA costs on a GPU.

    The single place that routes by device, so that checks in Triton's interpreter can send CPU
    tensors down the same path (by replacing this function).

    Example:
        >>> takes_prepared_calls(torch.zeros(1))
        False
    """
    return x.is_cuda


@torch.jit.unused  # TorchScript sees the plain operators
def eager_call(
    x: Tensor,
    weight: Tensor,
    identity: Tensor | None,
    descriptor: Tensor | None,
    activation: str,
    inplace: bool,
    padding: str,
    pooling: str,
    gate: str,
    channel_dim: int,
    channels: int | None,
    norm: FrozenNorm | None = None,
) -> Tensor | None:
    """ECA or a block tail computed before any checking in Python, or ``None``.

    A common eager call (a dense tensor, the usual options) spends more time in Python than in
    the kernels at small sizes, and on a GPU the host's time per call is what ECA costs. So
    :class:`~ecanet.layers.ECA` and :mod:`ecanet.functional` try this first; it returns ``None``
    whenever the checked path must run (forward-mode AD, an operator-recording mode or transform,
    an unusual layout, a call not seen before, or any invalid argument, whose error that path
    raises), so results and errors are those of :func:`fast_eca`.

    - CPU: the compiled extension checks everything itself and computes in one C++ call (and the
      interpreter no longer runs on caches the kernel's pass just evicted); while autograd
      records, that call records one C++ node with the fused backward, as the Python autograd
      Function of :mod:`ecanet.ops.function` does on the checked path, without its machinery.
    - CUDA, inference and training: :func:`ecanet.ops.prepared_calls.run` launches the Triton
      kernels, or runs the fused autograd Function, directly when a call with the same argument
      layout and options has passed the checked path before. There, with grad mode off, the
      rescale can also apply the eval-mode BatchNorm that ``x`` comes before (``norm``).

    Args:
        x, weight, identity, descriptor, inplace, padding, gate, channel_dim: as for :func:`fast_eca`.
        activation: ``"relu"`` or ``"none"`` (anything else gives ``None``).
        pooling: ``"avg"`` (anything else gives ``None``).
        channels: the channel count the caller was built for (``None``: any).
        norm: an eval-mode BatchNorm to apply to ``x`` first, or ``None``: the result is that of
            the call on ``norm(x)`` (prepared calls only, see :func:`ecanet.ops.prepared_calls.run`).

    Returns:
        The result, or ``None``.

    Example:
        >>> x = torch.randn(2, 4, 3, 3)
        >>> out = eager_call(x, torch.zeros(1, 1, 3), None, None, "none", False, "zeros", "avg", "sigmoid", 1, 4)
        >>> out is None or torch.allclose(out, x * 0.5)
        True
    """
    tensors = (x, weight, identity, descriptor) if norm is None else (x, weight, identity, descriptor, *norm[:4])
    prepared = takes_prepared_calls(x)
    if (
        not (prepared or (x.is_cpu and norm is None))
        or pooling != "avg"
        or (activation != "relu" and activation != "none")
        or _operators_must_be_seen(tensors)
    ):
        return None
    if prepared:  # what may change between calls with one key is checked above and here
        if (channels is not None and x.dim() >= 3 and x.shape[channel_dim] != channels) or (
            torch._C._len_torch_dispatch_stack() > 0
        ):
            return None
        relu = activation == "relu"
        return prepared_calls.run(x, weight, identity, descriptor, relu, inplace, padding, gate, channel_dim, norm)
    training = records_graph(x, weight, identity)
    entry = cpu_kernels.entry("eca_training" if training else "eca_inference")
    if entry is None:
        return None
    relu = activation == "relu"
    inplace = inplace and not (training and inputs_kept())  # see ecanet.ops.second_derivatives
    return entry(
        x, weight, identity, descriptor, relu, inplace, padding, gate, channel_dim, -1 if channels is None else channels
    )


def eager_pooled_projection(
    z: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    running_mean: Tensor,
    running_var: Tensor,
    norm_weight: Tensor | None,
    norm_bias: Tensor | None,
    eps: float,
) -> Tensor | None:
    """``bn(conv(z))`` averaged over H and W (1x1 convolution, eval-mode BatchNorm) in one C++ step, or ``None``.

    :func:`ecanet.models.pooling.pooled_through_projection` tries this first: at inference the
    pooling pass is one kernel call, and the handful of operations on ``(N, C)`` tensors after it
    cost more from Python, right after a pass over a large activation, than their arithmetic. The
    extension returns ``None`` wherever the Python path must run (an autograd graph to record, an
    operator-recording mode or transform, a layout or device the kernels do not cover, parameters
    whose sizes do not fit ``z``).

    Args:
        z: the convolution's input ``(N, C_in, H, W)``.
        weight, bias: the convolution's ``[C_out, C_in, 1, 1]`` weight and ``(C_out)`` bias or ``None``.
        running_mean, running_var, norm_weight, norm_bias, eps: the BatchNorm's statistics and affine.

    Returns:
        ``(N, C_out)`` in float32 (float64 for float64 input), or ``None``.

    Example:
        >>> z, weight = torch.ones(2, 3, 4, 4), torch.ones(5, 3, 1, 1)
        >>> pooled = eager_pooled_projection(z, weight, None, torch.zeros(5), torch.ones(5), None, None, 0.0)
        >>> pooled is None or torch.equal(pooled, torch.full((2, 5), 3.0))
        True
    """
    if not z.is_cpu or _operators_must_be_seen((z, weight, bias, running_mean, running_var, norm_weight, norm_bias)):
        return None
    entry = cpu_kernels.entry("pooled_projection")
    if entry is None:
        return None
    return entry(z, weight, bias, running_mean, running_var, norm_weight, norm_bias, eps)


def fast_mean(x: Tensor, channel_dim: int) -> Tensor | None:
    """``x``'s per-channel mean ``(N, C)`` in one reading pass, or ``None`` where the plain operators must run.

    float32 for half types and float32 input, float64 for float64 (the descriptor's precision).
    Only outside autograd: the kernels have no derivative of their own.

    Example:
        >>> fast_mean(torch.ones(2, 3, 4, 4).to(memory_format=torch.channels_last), 1)
        tensor([[1., 1., 1.],
                [1., 1., 1.]])
    """
    if use_plain_operators() or torch.overrides.has_torch_function((x,)):
        return None
    if torch.is_grad_enabled() and x.requires_grad:
        return None
    if x.dtype not in _FLOATING or channel_geometry(x, channel_dim) is None:
        return None
    kernels = kernels_for(x)
    return None if kernels is None else kernels.mean(x, channel_dim)
