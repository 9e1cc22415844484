"""The math of Efficient Channel Attention, as plain functions.

Every ECA module in ecanet is a thin shell around these functions: the kernel-size rule
(:func:`eca_kernel_size`), the gate (:func:`eca_gate`: pool, k-tap channel convolution, gate
non-linearity) and the full layer (:func:`eca`: gate, then rescale). They accept any number of
spatial dimensions and channels either first (``channel_dim=1``, ``(N, C, *spatial)``) or last
(``channel_dim=-1``, ``(N, *, C)``), and never mix samples of a batch.
"""

import math

import torch
from torch import Tensor

from ecanet.ops import eager_call, fast_eca, fast_mean
from ecanet.ops.channel_gate import channel_conv, channel_gate

__all__ = [
    "check_eca_options",
    "eca",
    "eca_channel_conv",
    "eca_descriptor",
    "eca_gate",
    "eca_kernel_size",
    "eca_residual",
]


def eca_kernel_size(channels: int, gamma: float = 2.0, beta: float = 1.0, min_size: int = 1) -> int:
    """The paper's adaptive kernel size ``k = |log2(C)/gamma + beta/gamma|_odd``.

    Resolved exactly as the paper's reference snippet does: ``t = floor((log2(C) + beta) / gamma)``,
    then ``k = t`` if ``t`` is odd, else ``t + 1``. Exact ties therefore go *up*
    (C = 128 gives 5, C = 2048 gives 7) and very narrow layers (C = 1, 2, 4) get ``k = 1``, i.e.
    no cross-channel interaction. ``min_size=3`` reproduces timm's variant of the rule.

    Args:
        channels: number of channels ``C`` (a positive int).
        gamma: divisor of ``log2(C)`` (``> 0``); the paper uses 2.
        beta: offset added to ``log2(C)``; the paper uses 1.
        min_size: smallest kernel returned (a positive odd int); 1 follows the paper.

    Returns:
        The odd kernel size ``k >= min_size``.

    Example:
        >>> [eca_kernel_size(c) for c in (64, 128, 256, 512, 1024, 2048)]
        [3, 5, 5, 5, 5, 7]
        >>> eca_kernel_size(4), eca_kernel_size(4, min_size=3)
        (1, 3)
    """
    if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
        raise ValueError(f"channels must be a positive int, got {channels!r}")
    if not (isinstance(gamma, (int, float)) and math.isfinite(gamma) and gamma > 0):
        raise ValueError(f"gamma must be a finite number > 0, got {gamma!r}")
    if not (isinstance(beta, (int, float)) and math.isfinite(beta)):
        raise ValueError(f"beta must be a finite number, got {beta!r}")
    if isinstance(min_size, bool) or not isinstance(min_size, int) or min_size < 1 or min_size % 2 == 0:
        raise ValueError(f"min_size must be a positive odd int, got {min_size!r}")
    # math.log2 is exact on powers of two, which are the only integers where the paper's
    # defaults put (log2(C) + beta) / gamma exactly on an integer.
    t = math.floor((math.log2(channels) + beta) / gamma)
    k = t if t % 2 == 1 else t + 1
    return max(k, min_size)


def _check_choice(name: str, value: str, choices: list[str]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got '{value}'")


def check_eca_options(padding: str = "zeros", pooling: str = "avg", gate: str = "sigmoid") -> None:
    """Raises ``ValueError`` naming the first unknown option.

    Valid values: padding ``"zeros"``/``"circular"``, pooling ``"avg"``/``"avgmax"``, gate
    ``"sigmoid"``/``"hard_sigmoid"``. (Literal lists, not module constants: TorchScript cannot
    read global tuples.)

    Example:
        >>> check_eca_options(padding="circular")
    """
    _check_choice("padding", padding, ["zeros", "circular"])
    _check_choice("pooling", pooling, ["avg", "avgmax"])
    _check_choice("gate", gate, ["sigmoid", "hard_sigmoid"])


def _check_input(x: Tensor, channel_dim: int, layer: str = "ECA") -> int:
    """Validates ``x`` for ``layer`` (its name, for the error) and returns the non-negative index of its channel dim."""
    if not x.is_floating_point():
        raise TypeError(f"{layer} expects a floating-point input, got dtype {x.dtype}")
    if channel_dim != 1 and channel_dim != -1:
        raise ValueError(f"channel_dim must be 1 (N, C, *spatial) or -1 (N, *, C), got {channel_dim}")
    if x.dim() < 3:
        layout = "(N, C, *spatial)" if channel_dim == 1 else "(N, *, C)"
        raise ValueError(
            f"{layer} expects a batched input {layout} with at least one spatial/token dim "
            f"(3 or more dims), got shape {list(x.shape)}; add the missing batch or spatial dim"
        )
    return 1 if channel_dim == 1 else x.dim() - 1


def _check_weight(weight: Tensor, channels: int) -> int:
    """Validates an ECA kernel of shape [1, 1, k] (shared) or [C, 1, k] and returns k."""
    if weight.dim() != 3 or weight.shape[1] != 1:
        raise ValueError(
            f"ECA weight must have shape [1, 1, k] (shared) or [C, 1, k] (per channel), got {list(weight.shape)}"
        )
    if weight.shape[0] != 1 and weight.shape[0] != channels:
        raise ValueError(f"per-channel ECA weight has {weight.shape[0]} rows but the input has {channels} channels")
    k = weight.shape[2]
    if k % 2 == 0:
        raise ValueError(f"ECA kernel size must be odd (even k shifts the channel axis), got k={k}")
    return k


def _check_kernel(weight: Tensor, channels: int, padding: str) -> int:
    """:func:`_check_weight`, and that circular padding has enough channels to wrap; returns k."""
    k = _check_weight(weight, channels)
    if padding == "circular" and k // 2 > channels:
        raise ValueError(f"circular padding needs k // 2 <= C, got k={k} for C={channels}")
    return k


def _check_device(x: Tensor, weight: Tensor) -> None:
    if weight.device != x.device:
        raise RuntimeError(
            f"the ECA kernel is on {weight.device} but the input is on {x.device}; move the layer (or weight) there"
        )


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for half types (accumulate the pooled mean in float32), else the dtype itself."""
    return torch.promote_types(dtype, torch.float32)


def eca_descriptor(x: Tensor, pooling: str = "avg", channel_dim: int = 1) -> Tensor:
    """The pooled per-channel descriptor of ``x``, shape ``(N, C)``.

    Half-precision inputs are accumulated and returned in float32; float64 stays float64.

    Args:
        x: input of shape ``(N, C, *spatial)`` (``channel_dim=1``) or ``(N, *, C)`` (``channel_dim=-1``).
        pooling: ``"avg"`` (global average, the paper) or ``"avgmax"`` (average + maximum).
        channel_dim: ``1`` for channels-first, ``-1`` for channels-last input.

    Shape:
        - Input: ``(N, C, *)`` or ``(N, *, C)``
        - Output: ``(N, C)``

    Example:
        >>> eca_descriptor(torch.ones(2, 8, 5, 5)).shape
        torch.Size([2, 8])
    """
    cdim = _check_input(x, channel_dim)
    _check_choice("pooling", pooling, ["avg", "avgmax"])
    dims: list[int] = []
    for d in range(1, x.dim()):
        if d != cdim:
            dims.append(d)
    fast: Tensor | None = None
    if not torch.jit.is_scripting():
        fast = _fast_mean(x, channel_dim)
    descriptor = x.mean(dim=dims, dtype=_compute_dtype(x.dtype)) if fast is None else fast
    if pooling == "avgmax":
        descriptor = descriptor + x.amax(dim=dims).to(descriptor.dtype)
    return descriptor


def eca_channel_conv(descriptor: Tensor, weight: Tensor, padding: str = "zeros") -> Tensor:
    """The k-tap convolution along the channel axis of a ``(N, C)`` descriptor.

    ``out[n, c] = sum_j weight[c or 0, 0, j] * padded[n, c + j]`` with ``(k - 1) / 2`` zeros (or the
    wrapped-around channels) on each end, which is ``Conv1d(1, 1, k, padding=(k-1)//2, bias=False)``
    applied to ``descriptor.unsqueeze(1)`` for a shared kernel. A ``[C, 1, k]`` weight gives every
    channel its own kernel (the paper's ECA-NS). Written as k shifted multiply-adds, which is far
    cheaper than a Conv1d call for the tiny k used by ECA.

    Args:
        descriptor: ``(N, C)`` pooled descriptor.
        weight: ``[1, 1, k]`` shared or ``[C, 1, k]`` per-channel kernel, k odd.
        padding: ``"zeros"`` (paper) or ``"circular"`` (the channel axis wraps around).

    Example:
        >>> eca_channel_conv(torch.ones(1, 4), torch.ones(1, 1, 3))
        tensor([[2., 3., 3., 2.]])
    """
    if descriptor.dim() != 2:
        raise ValueError(f"descriptor must have shape (N, C), got {list(descriptor.shape)}")
    channels = descriptor.shape[1]
    _check_choice("padding", padding, ["zeros", "circular"])
    _check_kernel(weight, channels, padding)
    return channel_conv(descriptor, weight, padding)


def eca_gate(
    x: Tensor,
    weight: Tensor,
    padding: str = "zeros",
    pooling: str = "avg",
    gate: str = "sigmoid",
    channel_dim: int = 1,
) -> Tensor:
    """The ECA attention weights of ``x``: pool, channel convolution, gate. Shape ``(N, C)``.

    Computed in float32 for half-precision inputs (float64 for float64 inputs); the caller casts
    before rescaling. Arguments as in :func:`eca`.

    Example:
        >>> w = eca_gate(torch.randn(2, 16, 8, 8), torch.randn(1, 1, 3))
        >>> w.shape, bool(((w > 0) & (w < 1)).all())
        (torch.Size([2, 16]), True)
    """
    check_eca_options(padding, pooling, gate)
    cdim = _check_input(x, channel_dim)
    _check_kernel(weight, x.shape[cdim], padding)
    return channel_gate(eca_descriptor(x, pooling, channel_dim), weight, padding, gate)


def eca(
    x: Tensor,
    weight: Tensor,
    padding: str = "zeros",
    pooling: str = "avg",
    gate: str = "sigmoid",
    channel_dim: int = 1,
    inplace: bool = False,
) -> Tensor:
    """Efficient Channel Attention: ``x * gate(conv1d_k(pool(x)))`` broadcast over the spatial dims.

    Args:
        x: input ``(N, C, *spatial)`` with at least one spatial dim, or ``(N, *, C)`` with
            ``channel_dim=-1`` (channels-last tokens). Any floating dtype.
        weight: ``[1, 1, k]`` shared kernel (the paper's ECA) or ``[C, 1, k]`` per-channel
            kernels (ECA-NS); k odd.
        padding: ``"zeros"`` (paper) or ``"circular"`` channel-axis padding.
        pooling: ``"avg"`` (paper) or ``"avgmax"`` (average + max descriptor through the same kernel).
        gate: ``"sigmoid"`` (paper) or ``"hard_sigmoid"``.
        channel_dim: ``1`` or ``-1``.
        inplace: write the result into ``x`` and return it. Safe under autograd: a use that
            would need the overwritten values raises an error instead of giving wrong gradients.

    Shape:
        - Input: ``(N, C, *)`` or ``(N, *, C)``
        - Output: same shape, dtype and memory format as the input.

    Eager calls on CPU and CUDA tensors take the fused fast path of :mod:`ecanet.ops` (one
    reading pass for the pool, one pass for the rescale, a fused backward; at inference on CPU
    one C++ call, and on CUDA a call whose layout passed the checks before, through
    :func:`ecanet.ops.dispatch.eager_call` before any check); TorchScript,
    tracing, ``torch.compile``, ``torch.export`` and ONNX export see the plain operators below.

    Example:
        >>> x = torch.randn(2, 64, 7, 7)
        >>> eca(x, torch.randn(1, 1, 3)).shape
        torch.Size([2, 64, 7, 7])
    """
    if not torch.jit.is_scripting():
        out = eager_call(x, weight, None, None, "none", inplace, padding, pooling, gate, channel_dim, None)
        if out is not None:
            return out
        check_eca_options(padding, pooling, gate)
        _check_kernel(weight, x.shape[_check_input(x, channel_dim)], padding)
        _check_device(x, weight)
        fast = _fast_path(x, weight, None, False, inplace, padding, pooling, gate, channel_dim)
        if fast is not None:
            return fast
    weights = _broadcastable(eca_gate(x, weight, padding, pooling, gate, channel_dim).to(x.dtype), x.dim(), channel_dim)
    if inplace:
        return x.mul_(weights)
    return x * weights


def eca_residual(
    x: Tensor,
    weight: Tensor,
    identity: Tensor,
    activation: str = "relu",
    padding: str = "zeros",
    pooling: str = "avg",
    gate: str = "sigmoid",
    channel_dim: int = 1,
    inplace: bool = False,
    descriptor: Tensor | None = None,
) -> Tensor:
    """The tail of a residual block with ECA: ``activation(eca(x) + identity)``.

    This is where the paper puts ECA (after the branch's last normalization, before the addition);
    fusing rescale, addition and activation lets a block pay for ECA with only the pooling read.

    Args:
        x: output of the residual branch, as for :func:`eca`.
        weight: ECA kernel, as for :func:`eca`.
        identity: the shortcut, same shape as ``x``.
        activation: ``"relu"`` (ResNet blocks) or ``"none"`` (linear bottlenecks, MobileNetV2).
        padding, pooling, gate, channel_dim: as for :func:`eca`.
        inplace: write the result into ``x`` when no autograd graph needs ``x`` (inference),
            and on the fast path also while recording one when ``x`` is an intermediate float32
            or float64 result (not a leaf that requires grad, not a view) and ``identity`` has
            memory of its own: the backward then recovers ``x * gate`` as output minus
            ``identity`` (in half types that difference would lose ``x * gate`` to the output's
            rounding, so they keep ``x``). Otherwise the result goes to a new tensor.
        descriptor: ``x``'s pooled mean ``(N, C)`` (``eca_descriptor(x)``) if the caller can
            compute it more cheaply than by reading ``x`` (ecanet's bottlenecks take it through
            their last 1x1 convolution, see :func:`ecanet.models.pooling.pooled_through_projection`).
            Used with ``pooling="avg"`` where no autograd graph is recorded; ignored otherwise.

    Shape:
        - Input: ``x`` and ``identity`` of the same shape ``(N, C, *)`` or ``(N, *, C)``.
        - Output: that shape.

    Example:
        >>> x, identity = torch.randn(2, 64, 8, 8), torch.randn(2, 64, 8, 8)
        >>> bool((eca_residual(x, torch.randn(1, 1, 3), identity) >= 0).all())
        True
    """
    if not torch.jit.is_scripting():
        out = eager_call(
            x, weight, identity, descriptor, activation, inplace, padding, pooling, gate, channel_dim, None
        )
        if out is not None:
            return out
    _check_choice("activation", activation, ["relu", "none"])
    if identity.shape != x.shape:
        raise ValueError(f"identity shape {list(identity.shape)} does not match x shape {list(x.shape)}")
    cdim = _check_input(x, channel_dim)
    if descriptor is not None and (
        descriptor.dim() != 2 or descriptor.shape[0] != x.shape[0] or descriptor.shape[1] != x.shape[cdim]
    ):
        raise ValueError(
            f"descriptor must have shape (N, C) = ({x.shape[0]}, {x.shape[cdim]}), got {list(descriptor.shape)}"
        )
    if not torch.jit.is_scripting():
        check_eca_options(padding, pooling, gate)
        _check_kernel(weight, x.shape[cdim], padding)
        _check_device(x, weight)
        relu = activation == "relu"
        fast = _fast_path(x, weight, identity, relu, inplace, padding, pooling, gate, channel_dim, descriptor)
        if fast is not None:
            return fast
    needs_graph = torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad or identity.requires_grad)
    # In place only where it gives what out of place gives: x's dtype is the sum's, and no graph
    # needs x. A trace is out of place in every grad mode (its check retraces under no_grad).
    in_place = (
        inplace
        and not needs_graph
        and torch.promote_types(x.dtype, identity.dtype) == x.dtype
        and not torch.jit.is_tracing()
    )
    if descriptor is not None and pooling == "avg" and not needs_graph:
        weights = _broadcastable(channel_gate(descriptor, weight, padding, gate).to(x.dtype), x.dim(), channel_dim)
        out = x.mul_(weights) if in_place else x * weights
        in_place = True  # out is a buffer of this function's own either way
    else:
        out = eca(x, weight, padding, pooling, gate, channel_dim, in_place)
    if in_place:
        out = out.add_(identity)
        return out.relu_() if activation == "relu" else out
    out = out + identity
    if activation == "relu":
        return torch.relu(out)
    return out


@torch.jit.unused
def _fast_path(
    x: Tensor,
    weight: Tensor,
    identity: Tensor | None,
    relu: bool,
    inplace: bool,
    padding: str,
    pooling: str,
    gate: str,
    channel_dim: int,
    descriptor: Tensor | None = None,
) -> Tensor | None:
    """:func:`ecanet.ops.fast_eca` for validated arguments, or ``None`` where the plain operators must run."""
    if pooling != "avg":
        return None
    return fast_eca(x, weight, identity, relu, inplace, padding, gate, channel_dim, descriptor)


@torch.jit.unused
def _fast_mean(x: Tensor, channel_dim: int) -> Tensor | None:
    """:func:`ecanet.ops.fast_mean`: the descriptor in one reading pass, or ``None``."""
    return fast_mean(x, channel_dim)


def _broadcastable(weights: Tensor, ndim: int, channel_dim: int) -> Tensor:
    """Views ``(N, C)`` attention weights so they broadcast against an ``ndim``-dim input."""
    shape: list[int] = [weights.shape[0]] + [1] * (ndim - 1)
    shape[1 if channel_dim == 1 else ndim - 1] = weights.shape[1]
    return weights.view(shape)
