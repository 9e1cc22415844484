"""The fused ECA autograd Function, over a kernel backend that does the forward and the backward.

A backend (:class:`EcaKernels`) works on the caller's tensors as ``(N, C, S)`` (through their
strides, :func:`ecanet.ops.views.channel_geometry`) and writes into buffers the Function owns.
Forward: one read of ``x`` for the pooled mean, the gate on the tiny ``(N, C)`` descriptor, one
pass writing ``act(x * gate + identity)``. Backward: one reduction ``sum_s(grad * x)`` for the gate
gradient, the gate's gradient on ``(N, C)``, and one pass writing the input gradient
``grad * gate + d_mean / S``. Saved for backward: the input (or, in place, the output), the ReLU
output when there is one, and two ``(N, C)`` tensors.

Eager CPU training calls that :func:`ecanet.ops.dispatch.eager_call` serves skip this Function:
the compiled extension records the same node in C++ (``FusedTraining`` in ``csrc/fused_training.h``),
without a Python Function's host time. Every other training call (the checked path, the ATen and
Triton backends) comes here.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor

from ecanet.ops.channel_gate import channel_gate
from ecanet.ops.second_derivatives import inputs_kept
from ecanet.ops.views import same_layout

__all__ = [
    "SECOND_DERIVATIVE_REFUSED",
    "EcaKernels",
    "count_in_place_write",
    "differentiable_gradients",
    "fused_eca_function",
    "records_graph",
]


class EcaKernels(Protocol):
    """What a backend provides: the fused forward and backward, over ``(N, C, S)``.

    The large tensors are ``(N, C, *)`` (``channel_dim=1``) or ``(N, *, C)`` (``channel_dim=-1``)
    and share one memory layout that has an ``(N, C, S)`` view (see :mod:`ecanet.ops.views`); each
    backend sees them as ``(N, C, S)`` in its own way (the Triton kernels through their strides,
    with no view at all). ``mean`` and ``gate`` are ``(N, C)`` in float32 (float64 for float64
    input). Implemented by :mod:`ecanet.ops.cpu_kernels` (compiled, CPU) and
    :class:`ecanet.ops.composed.ComposedKernels` (ATen kernels plus the gate in torch) and
    :class:`ecanet.ops.triton_backend.TritonKernels` (Triton, CUDA).
    """

    def mean(self, x: Tensor, channel_dim: int) -> Tensor:
        """The pooled descriptor: ``x``'s mean over ``S``, ``(N, C)``, in one reading pass."""
        ...

    def empty_like(self, like: Tensor) -> Tensor:
        """A new tensor like ``like`` (same shape, dtype and strides) for the kernels to fill."""
        ...

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
        """Writes ``act(x * gate + identity)`` into ``out`` (may be ``x``); returns ``(mean, gate)``.

        ``known_mean``, when given, is ``x``'s mean computed elsewhere: the pooling pass is skipped.
        """
        ...

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
        """Returns the kernel's gradient; writes the masked output gradient and the input gradient.

        Args:
            grad: gradient of the output.
            saved: the tensor the gate multiplied, or with ``inplace`` the output itself.
            relu_out: output after ReLU (its zeros mask ``grad``), or ``None`` without ReLU.
            mean, gate: as returned by :meth:`forward`.
            weight: ECA kernel.
            padding, gate_kind: the gate's options.
            inplace: ``saved`` is the output ``act(x * gate + identity)`` rather than ``x``.
            identity: with ``inplace``, the shortcut that was added (``x * gate`` is recovered as
                ``saved - identity`` where the ReLU passed), or ``None`` when there was none.
            masked: buffer for the ReLU-masked gradient (the shortcut's gradient), or ``None``.
            dx: buffer for the input gradient, or ``None`` when it is not needed.
            channel_dim: ``1`` or ``-1``.
        """
        ...


SECOND_DERIVATIVE_REFUSED = (
    "ecanet: ECA wrote its result over its input (in place), so its fused backward has no second "
    "derivative; run the forward inside `with ecanet.twice_differentiable():`, where ECA keeps its "
    "inputs (ecanet's ResNet and MobileNetV2 blocks write their tails in place while training in "
    "float32 and float64, as ECA(inplace=True) does)"
)
"""The error of a second derivative through an in-place fused call (its input is gone)."""


def differentiable_gradients(
    grad: Tensor,
    x: Tensor,
    relu_out: Tensor | None,
    weight: Tensor,
    padding: str,
    gate: str,
    channel_dim: int,
    needs: tuple[bool, bool, bool],
) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
    """The gradients of ``act(x * gate + identity)`` in plain operators that autograd records, so
    that they can be differentiated again: the fused backward's answer when it runs with
    ``create_graph=True`` and ``x`` was kept (not overwritten in place).

    ``x * gate`` is computed again from ``x`` in plain operators and differentiated by autograd;
    the ReLU's mask is a step function of the saved output, whose derivative is zero.

    Args:
        grad: gradient of the output.
        x: the input as saved for the backward (with its own autograd history).
        relu_out: the output after ReLU, or ``None`` without ReLU.
        weight: ECA kernel ``[1 or C, 1, k]``.
        padding, gate: the gate's options.
        channel_dim: ``1`` or ``-1``.
        needs: which of ``(x, weight, identity)`` want a gradient.

    Returns:
        The gradients of ``x``, ``weight`` and ``identity``, ``None`` where not wanted.

    Example:
        >>> x = torch.ones(1, 2, 3, requires_grad=True)
        >>> weight = torch.zeros(1, 1, 1, requires_grad=True)
        >>> d_x, d_weight, d_identity = differentiable_gradients(
        ...     torch.ones(1, 2, 3), x, None, weight, "zeros", "sigmoid", 1, (True, True, False))
        >>> d_x[0, 0], d_weight.flatten(), d_identity
        (tensor([0.5000, 0.5000, 0.5000], grad_fn=<SelectBackward0>), tensor([1.5000], grad_fn=<ViewBackward0>), None)
    """
    with torch.enable_grad():
        if relu_out is not None:
            grad = grad * (relu_out > 0)
        wanted = [tensor for tensor, need in zip((x, weight), needs[:2], strict=True) if need]
        found = iter(
            torch.autograd.grad(_gated(x, weight, padding, gate, channel_dim), wanted, grad, create_graph=True)
            if wanted
            else ()
        )
        d_x = next(found) if needs[0] else None
        d_weight = next(found) if needs[1] else None
    return d_x, d_weight, grad if needs[2] else None


def _gated(x: Tensor, weight: Tensor, padding: str, gate: str, channel_dim: int) -> Tensor:
    """``x * gate(mean(x))`` in plain operators, the mean accumulated in float32 (float64)."""
    pooled = [dim for dim in range(1, x.dim()) if dim != channel_dim % x.dim()]
    mean = x.mean(dim=pooled, dtype=torch.promote_types(x.dtype, torch.float32))
    shape = [x.shape[0]] + [1] * (x.dim() - 1)
    shape[channel_dim] = x.shape[channel_dim]
    return x * channel_gate(mean, weight, padding, gate).to(x.dtype).view(shape)


class _SecondDerivativeRefused(torch.autograd.Function):
    """Passes first gradients through as one recorded node whose own backward raises
    :data:`SECOND_DERIVATIVE_REFUSED`. Its first input ties it to the graph of the input that was
    overwritten, so every second derivative that would pass there runs it (with
    ``torch.autograd.grad(..., allow_unused=True)`` too, where a node tied to nothing is skipped
    and the derivative silently comes back as ``None``)."""

    @staticmethod
    def forward(ctx, connection: Tensor, *gradients: Tensor) -> tuple[Tensor, ...]:
        return gradients

    @staticmethod
    def backward(ctx, *grads: Tensor) -> None:
        raise RuntimeError(SECOND_DERIVATIVE_REFUSED)


def _refuse_second_derivative(gradients: tuple[Tensor | None, ...], connection: Tensor) -> tuple[Tensor | None, ...]:
    present = [gradient for gradient in gradients if gradient is not None]
    if not present:
        return gradients
    passed = iter(_SecondDerivativeRefused.apply(connection, *present))
    return tuple(None if gradient is None else next(passed) for gradient in gradients)


class _FusedEca(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx,
        x: Tensor,
        weight: Tensor,
        identity: Tensor | None,
        relu: bool,
        inplace: bool,
        padding: str,
        gate: str,
        channel_dim: int,
        kernels: EcaKernels,
    ) -> Tensor:
        out = x if inplace else kernels.empty_like(x)
        mean, gates = kernels.forward(x, weight, identity, relu, padding, gate, out, channel_dim)
        if inplace:
            ctx.mark_dirty(x)
        # In place, x itself is gone; the output stands in for it (see EcaKernels.backward).
        saved_identity = identity if inplace else None
        saved_out = out if (relu or inplace) else None
        ctx.save_for_backward(None if inplace else x, saved_out, mean, gates, weight, saved_identity)
        ctx.options = (relu, inplace, padding, gate, channel_dim, kernels, identity is not None)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, out, mean, gates, weight, saved_identity = ctx.saved_tensors
        relu, inplace, padding, gate, channel_dim, kernels, has_identity = ctx.options
        needs_x, needs_weight, needs_identity = ctx.needs_input_grad[:3]
        if torch.is_grad_enabled():  # create_graph=True: the gradients are differentiated again
            if x is not None:
                gradients = differentiable_gradients(
                    grad, x, out if relu else None, weight, padding, gate, channel_dim, ctx.needs_input_grad[:3]
                )
                return *gradients, None, None, None, None, None, None
            with torch.no_grad():
                first = _FusedEca.backward(ctx, grad)
            return *_refuse_second_derivative(first[:3], out), *first[3:]
        like = out if x is None else x
        if not same_layout(grad, like):
            grad = kernels.empty_like(like).copy_(grad)
        # The shortcut's gradient is the ReLU-masked output gradient: stored only when wanted.
        masked = kernels.empty_like(like) if (relu and has_identity and needs_identity) else None
        d_x = kernels.empty_like(like) if needs_x else None
        d_weight = kernels.backward(
            grad,
            like,
            out if relu else None,
            mean,
            gates,
            weight,
            padding,
            gate,
            inplace,
            saved_identity,
            masked,
            d_x,
            channel_dim,
        )
        d_identity = None
        if has_identity and needs_identity:
            d_identity = masked if relu else grad
        return d_x, d_weight if needs_weight else None, d_identity, None, None, None, None, None, None


def fused_eca_function(
    x: Tensor,
    weight: Tensor,
    identity: Tensor | None,
    relu: bool,
    inplace: bool,
    padding: str,
    gate: str,
    channel_dim: int,
    kernels: EcaKernels,
) -> Tensor:
    """Differentiable ``act(x * gate + identity)`` with the fused backward; see the module docstring.

    With ``inplace=True`` the result is written into ``x`` (marked dirty, so autograd rejects
    uses that would need the old values). With an ``identity`` as well, only where
    :func:`_overwritable_with_shortcut` allows it (else the result goes to a new tensor): the
    backward then recovers ``x * gate`` from the output and ``identity`` (saved instead of ``x``),
    which costs no extra memory when the shortcut is kept alive anyway, as a block's input is.

    Args:
        x: input with an ``(N, C, S)`` view (:func:`ecanet.ops.views.channel_geometry`).
        weight: ECA kernel ``[1 or C, 1, k]``.
        identity: shortcut laid out like ``x``, or ``None``.
        relu: apply ReLU after the addition.
        inplace: write the result into ``x`` (with an ``identity``, where allowed; see above).
        padding, gate: the gate's options (see :func:`ecanet.functional.eca`).
        channel_dim: ``1`` or ``-1``.
        kernels: the backend.

    Example:
        >>> from ecanet.ops.composed import ComposedKernels
        >>> from ecanet.ops import aten_kernels
        >>> x = torch.randn(2, 4, 3, 3, requires_grad=True)
        >>> out = fused_eca_function(x, torch.ones(1, 1, 3), None, False, False, "zeros", "sigmoid", 1,
        ...                          ComposedKernels(aten_kernels))
        >>> type(out.grad_fn).__name__
        '_FusedEcaBackward'
    """
    if inplace and inputs_kept():
        inplace = False
    if inplace and identity is not None:
        inplace = _overwritable_with_shortcut(x, identity)
    return _FusedEca.apply(x, weight, identity, relu, inplace, padding, gate, channel_dim, kernels)


def count_in_place_write(x: Tensor) -> None:
    """Advances ``x``'s version counter after a kernel wrote into it, as an in-place operator does,
    so autograd rejects a backward that needs the overwritten values (inference tensors have none).

    Example:
        >>> x = torch.zeros(2)
        >>> count_in_place_write(x)
        >>> x._version
        1
    """
    if not x.is_inference():
        torch.autograd.graph.increment_version(x)


def records_graph(x: Tensor, weight: Tensor, identity: Tensor | None) -> bool:
    """Whether a call on these tensors records an autograd graph: grad mode is on and one of them requires grad.

    Example:
        >>> records_graph(torch.ones(2), torch.ones(1, requires_grad=True), None)
        True
        >>> with torch.no_grad():
        ...     records_graph(torch.ones(2), torch.ones(1, requires_grad=True), None)
        False
    """
    return torch.is_grad_enabled() and (
        x.requires_grad or weight.requires_grad or (identity is not None and identity.requires_grad)
    )


def _overwritable_with_shortcut(x: Tensor, identity: Tensor) -> bool:
    """Whether a block tail may overwrite ``x`` while recording a graph (its backward then reads
    the output and the shortcut instead of ``x``): ``x`` is an intermediate result (not a leaf that
    requires grad, not a view) in float32 or float64, and the shortcut does not share its memory.

    Half types keep ``x``: their output is rounded at the scale of ``output = x * gate + identity``,
    so ``output - identity`` loses most of ``x * gate`` where the shortcut is the larger term (a
    kernel gradient 10% off in bfloat16 with a shortcut ten times the branch, against 0.2% from
    ``x`` itself); float32 keeps ``x * gate`` to within 1e-7 of the shortcut's scale.

    Example:
        >>> source, shortcut = torch.ones(2, 3, requires_grad=True), torch.zeros(2, 3)
        >>> _overwritable_with_shortcut(source * 2, shortcut), _overwritable_with_shortcut(source, shortcut)
        (True, False)
    """
    if (x.requires_grad and x.grad_fn is None) or x.dtype not in (torch.float32, torch.float64):
        return False
    return x._base is None and identity.untyped_storage().data_ptr() != x.untyped_storage().data_ptr()
