"""Repeated eager calls on CUDA tensors: checked once per argument layout, then run directly.

A GPU runs ECA's two passes over an activation in microseconds; an eager call costs what the host
needs to issue them. Through the checked path (the argument checks of :mod:`ecanet.functional`,
:func:`ecanet.ops.dispatch.fast_eca`, the channel views) that was about 50 µs of an H200
machine's host time per inference call, more than the two launches and more than timm's whole
layer, and a network whose host only just keeps ahead of its GPU waits for every microsecond of it.

Whether a call passes those checks, and the sizes and strides the kernels walk, depend only on
the arguments' shapes, strides, dtypes and devices and on the options, whether or not the call
records an autograd graph. So once a call has passed them on the Triton backend,
:func:`ecanet.ops.dispatch.fast_eca` stores its :class:`~ecanet.ops.triton_kernels.Geometry`
and its inference launches (:class:`~ecanet.ops.triton_kernels.ForwardPlan`) under
:func:`call_key` (:func:`remember`), and :func:`run` serves later calls with the same key
straight from the store: an inference call by launching the planned kernels, a training call through
the fused autograd Function with a backend whose forward and backward launches are planned
(:class:`~ecanet.ops.triton_kernels.TrainingPlans`), so neither works out the geometry, tiles,
grids or constexprs again. What may change from one call to the next (grad
mode and which tensors require grad, operator-recording modes, tensor subclasses, the layer's
channel count, whether a block tail may overwrite its input) is checked on every call, here and
by the caller (:func:`ecanet.ops.dispatch.eager_call`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ecanet.ops import triton_kernels, triton_training
from ecanet.ops.frozen_norm import FrozenNorm
from ecanet.ops.function import count_in_place_write, fused_eca_function, records_graph
from ecanet.ops.second_derivatives import inputs_kept
from ecanet.ops.triton_backend import TritonKernels
from ecanet.ops.triton_kernels import ForwardPlan, Geometry

__all__ = ["call_key", "remember", "run"]

_MOST_KEYS = 4096
"""Keys kept; past this (endlessly varying shapes), new layouts take the checked path every time."""


class _Prepared:
    """What a call with a stored key needs: its tensors' geometry, its inference launches planned,
    a backend for its training calls whose forward and backward launches are planned too, and,
    once their kernels are compiled, those launches from C++ (:mod:`ecanet.ops.triton_training`,
    ``None`` before, ``False`` where they cannot be launched from C++)."""

    __slots__ = ("inference", "options", "shape", "training", "training_node")

    def __init__(self, shape: Geometry, inference: ForwardPlan, training: TritonKernels, options: tuple) -> None:
        self.shape, self.inference, self.training, self.options = shape, inference, training, options
        self.training_node: Any = None


_prepared: dict[tuple, _Prepared] = {}


def call_key(
    x: Tensor,
    weight: Tensor,
    identity: Tensor | None,
    descriptor: Tensor | None,
    relu: bool,
    inplace: bool,
    padding: str,
    gate: str,
    channel_dim: int,
) -> tuple:
    """Everything the checks of a call depend on (arguments as for :func:`run`).

    Example:
        >>> options = (None, None, False, False, "zeros", "sigmoid", 1)
        >>> key = call_key(torch.ones(2, 3, 4), torch.ones(1, 1, 3), *options)
        >>> key == call_key(torch.zeros(2, 3, 4), torch.zeros(1, 1, 3), *options)
        True
    """
    return (
        x.shape,
        x.stride(),
        x.dtype,
        x.device,
        weight.shape,
        weight.stride(),
        weight.dtype,
        weight.device,
        None if identity is None else (identity.shape, identity.stride(), identity.dtype, identity.device),
        None if descriptor is None else (descriptor.shape, descriptor.stride(), descriptor.dtype, descriptor.device),
        relu,
        inplace,
        padding,
        gate,
        channel_dim,
    )


def remember(
    x: Tensor,
    weight: Tensor,
    identity: Tensor | None,
    descriptor: Tensor | None,
    relu: bool,
    inplace: bool,
    padding: str,
    gate: str,
    channel_dim: int,
) -> None:
    """Stores a call that passed every check on the Triton backend (arguments as for :func:`run`)
    under its :func:`call_key`, with its geometry and its launches planned."""
    if len(_prepared) < _MOST_KEYS:
        key = call_key(x, weight, identity, descriptor, relu, inplace, padding, gate, channel_dim)
        shape = triton_kernels.geometry(x, channel_dim)
        options = (shape, x.device, x.dtype, weight.shape, relu, padding, gate, identity is not None)
        # The key fixes every tensor's dtype and device: the launches may skip keying them.
        inference = triton_kernels.forward_plan(*options, False).bound()
        training = TritonKernels(triton_kernels.training_plans(*options).bound())
        _prepared[key] = _Prepared(shape, inference, training, (relu, padding, gate, channel_dim))


def run(
    x: Tensor,
    weight: Tensor,
    identity: Tensor | None,
    descriptor: Tensor | None,
    relu: bool,
    inplace: bool,
    padding: str,
    gate: str,
    channel_dim: int,
    norm: FrozenNorm | None = None,
) -> Tensor | None:
    """``act(x * gate + identity)`` as :func:`ecanet.ops.dispatch.fast_eca` computes it, if a call with
    the same key passed its checks before, else ``None``.

    Without an autograd graph to record, the planned kernels run directly
    (:class:`ecanet.ops.triton_kernels.ForwardPlan`); with one, through the fused autograd
    Function. The caller has made sure that no mode needs to see the operators (as
    :func:`ecanet.ops.dispatch.eager_call` does).

    With ``norm``, ``x`` is an eval-mode BatchNorm's input and the result that of the call on
    ``norm(x)``, whose key it shares (a BatchNorm lays its output out like its input): the norm is
    applied inside the rescale, and a ``descriptor`` is ``x``'s mean. Only with grad mode off (the
    norm's parameters get no gradient here) and only when the norm's tensors fit ``x``.

    Args:
        x, weight, identity, descriptor, inplace, padding, gate, channel_dim: as for
            :func:`ecanet.ops.dispatch.fast_eca`.
        relu: apply ReLU at the end.
        norm: the BatchNorm that ``x`` comes before, or ``None``.

    Returns:
        The result, or ``None``.
    """
    prepared = _prepared.get(call_key(x, weight, identity, descriptor, relu, inplace, padding, gate, channel_dim))
    if prepared is None:
        return None
    if norm is not None and (torch.is_grad_enabled() or not norm.fits(prepared.shape.c, x.device)):
        return None
    if records_graph(x, weight, identity):
        if triton_training.in_use:
            out = _through_training_node(prepared, x, weight, identity, inplace)
            if out is not None:
                return out
        return fused_eca_function(x, weight, identity, relu, inplace, padding, gate, channel_dim, prepared.training)
    if inplace and x.is_inference() and not torch.is_inference_mode_enabled():
        return None
    out = x if inplace else torch.empty_like(x)
    prepared.inference(x, weight, identity, out, descriptor, norm)
    if inplace:
        count_in_place_write(x)
    return out


def _through_training_node(
    prepared: _Prepared, x: Tensor, weight: Tensor, identity: Tensor | None, inplace: bool
) -> Tensor | None:
    """The training call through the C++ node launching the prepared kernels
    (:mod:`ecanet.ops.triton_training`); ``None``: the Python path. The node is built once, as soon
    as the kernels are compiled; ``False`` is kept where it cannot be, so that no call tries again."""
    node = prepared.training_node
    if node is None:
        if not triton_training.compiled(prepared.training.plans):
            return None
        node = triton_training.training_node(prepared.training.plans, *prepared.options)
        prepared.training_node = node = False if node is None else node
    if node is False:
        return None
    return node(x, weight, identity, inplace and not inputs_kept())
