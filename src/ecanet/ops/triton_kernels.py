"""The fast path's four kernels in Triton, for CUDA tensors (same contract as :mod:`ecanet.ops.aten_kernels`).

Every kernel walks ``(N, C, S)`` views through their strides, so channels-first and channels-last
memory share one code path; the tile is long along whichever axis is contiguous. Accumulation is
in float32 (float64 for float64 input). The kernels are compiled on first use, which is also when
``TRITON_INTERPRET=1`` is read: set it before the first call to run them on CPU tensors through
Triton's interpreter (how the test suite checks them on machines without a GPU).
"""

from __future__ import annotations

import functools
from types import SimpleNamespace

import torch
from torch import Tensor

__all__ = ["channel_sum", "gated_channel_dot", "input_grad", "scale_shift"]


@functools.cache
def _kernels() -> SimpleNamespace:
    """Compiles (or, under ``TRITON_INTERPRET=1``, wraps) the kernels once."""
    import triton
    import triton.language as tl

    @triton.jit
    def channel_sum_kernel(x_ptr, sums_ptr, C, S, sn, sc, ss, BLOCK_C: tl.constexpr, BLOCK_S: tl.constexpr):
        n = tl.program_id(0)
        channels = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
        acc = tl.zeros([BLOCK_C, BLOCK_S], dtype=sums_ptr.dtype.element_ty)
        for start in range(0, S, BLOCK_S):
            positions = start + tl.arange(0, BLOCK_S)
            mask = (channels[:, None] < C) & (positions[None, :] < S)
            offsets = n * sn + channels[:, None] * sc + positions[None, :] * ss
            acc += tl.load(x_ptr + offsets, mask=mask, other=0.0).to(acc.dtype)
        tl.store(sums_ptr + n * C + channels, tl.sum(acc, axis=1), mask=channels < C)

    @triton.jit
    def scale_shift_kernel(
        x_ptr,
        gate_ptr,
        identity_ptr,
        out_ptr,
        C,
        S,
        sn,
        sc,
        ss,
        HAS_IDENTITY: tl.constexpr,
        RELU: tl.constexpr,
        BLOCK_C: tl.constexpr,
        BLOCK_S: tl.constexpr,
    ):
        n = tl.program_id(0)
        channels = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
        positions = tl.program_id(2) * BLOCK_S + tl.arange(0, BLOCK_S)
        mask = (channels[:, None] < C) & (positions[None, :] < S)
        offsets = n * sn + channels[:, None] * sc + positions[None, :] * ss
        gate = tl.load(gate_ptr + n * C + channels, mask=channels < C, other=0.0)
        out = tl.load(x_ptr + offsets, mask=mask, other=0.0).to(gate.dtype) * gate[:, None]
        if HAS_IDENTITY:
            out += tl.load(identity_ptr + offsets, mask=mask, other=0.0).to(gate.dtype)
        if RELU:
            out = tl.maximum(out, 0.0)
        tl.store(out_ptr + offsets, out.to(out_ptr.dtype.element_ty), mask=mask)

    @triton.jit
    def gated_dot_kernel(
        grad_ptr,
        x_ptr,
        out_ptr,
        masked_ptr,
        sums_ptr,
        C,
        S,
        sn,
        sc,
        ss,
        RELU: tl.constexpr,
        BLOCK_C: tl.constexpr,
        BLOCK_S: tl.constexpr,
    ):
        n = tl.program_id(0)
        channels = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
        acc = tl.zeros([BLOCK_C, BLOCK_S], dtype=sums_ptr.dtype.element_ty)
        for start in range(0, S, BLOCK_S):
            positions = start + tl.arange(0, BLOCK_S)
            mask = (channels[:, None] < C) & (positions[None, :] < S)
            offsets = n * sn + channels[:, None] * sc + positions[None, :] * ss
            grad = tl.load(grad_ptr + offsets, mask=mask, other=0.0)
            if RELU:
                out = tl.load(out_ptr + offsets, mask=mask, other=0.0)
                grad = tl.where(out > 0, grad, tl.zeros_like(grad))
                tl.store(masked_ptr + offsets, grad, mask=mask)
            acc += grad.to(acc.dtype) * tl.load(x_ptr + offsets, mask=mask, other=0.0).to(acc.dtype)
        tl.store(sums_ptr + n * C + channels, tl.sum(acc, axis=1), mask=channels < C)

    @triton.jit
    def input_grad_kernel(
        grad_ptr, gate_ptr, shift_ptr, dx_ptr, C, S, sn, sc, ss, BLOCK_C: tl.constexpr, BLOCK_S: tl.constexpr
    ):
        n = tl.program_id(0)
        channels = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
        positions = tl.program_id(2) * BLOCK_S + tl.arange(0, BLOCK_S)
        mask = (channels[:, None] < C) & (positions[None, :] < S)
        offsets = n * sn + channels[:, None] * sc + positions[None, :] * ss
        gate = tl.load(gate_ptr + n * C + channels, mask=channels < C, other=0.0)
        shift = tl.load(shift_ptr + n * C + channels, mask=channels < C, other=0.0)
        grad = tl.load(grad_ptr + offsets, mask=mask, other=0.0).to(gate.dtype)
        dx = grad * gate[:, None] + shift[:, None]
        tl.store(dx_ptr + offsets, dx.to(dx_ptr.dtype.element_ty), mask=mask)

    return SimpleNamespace(
        channel_sum=channel_sum_kernel,
        scale_shift=scale_shift_kernel,
        gated_dot=gated_dot_kernel,
        input_grad=input_grad_kernel,
    )


def _blocks(x3: Tensor) -> tuple[int, int]:
    """Tile ``(BLOCK_C, BLOCK_S)``: long along the contiguous axis of the ``(N, C, S)`` view."""
    if x3.stride(2) == 1:
        return 4, 256
    return 64, 16


def _accumulate_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.promote_types(dtype, torch.float32)


def _check_same_layout(*tensors: Tensor | None) -> tuple[int, int, int]:
    strides = [t.stride() for t in tensors if t is not None]
    if any(s != strides[0] for s in strides):  # the dispatcher lays every operand out like x
        raise RuntimeError(f"Triton ECA kernels need operands with one layout, got strides {strides}")
    return strides[0]


def _grid(x3: Tensor, block_c: int, block_s: int | None = None) -> tuple[int, ...]:
    n, c, s = x3.shape
    grid = (n, -(-c // block_c))
    return grid if block_s is None else (*grid, -(-s // block_s))


def channel_sum(x3: Tensor) -> Tensor:
    """Per-channel sums ``(N, C)`` of a ``(N, C, S)`` view; see :func:`ecanet.ops.aten_kernels.channel_sum`."""
    n, c, s = x3.shape
    sums = torch.empty(n, c, dtype=_accumulate_dtype(x3.dtype), device=x3.device)
    block_c, block_s = _blocks(x3)
    _kernels().channel_sum[_grid(x3, block_c)](x3, sums, c, s, *x3.stride(), BLOCK_C=block_c, BLOCK_S=block_s)
    return sums


def scale_shift(x3: Tensor, gate: Tensor, identity3: Tensor | None, relu: bool, out3: Tensor) -> None:
    """Writes ``act(x3 * gate + identity3)`` into ``out3``; see :func:`ecanet.ops.aten_kernels.scale_shift`."""
    _, c, s = x3.shape
    strides = _check_same_layout(x3, identity3, out3)
    gate = gate.to(_accumulate_dtype(x3.dtype)).contiguous()
    block_c, block_s = _blocks(x3)
    _kernels().scale_shift[_grid(x3, block_c, block_s)](
        x3,
        gate,
        x3 if identity3 is None else identity3,
        out3,
        c,
        s,
        *strides,
        HAS_IDENTITY=identity3 is not None,
        RELU=relu,
        BLOCK_C=block_c,
        BLOCK_S=block_s,
    )


def gated_channel_dot(
    grad3: Tensor, x3: Tensor, out3: Tensor | None, masked3: Tensor | None, scratch3: Tensor
) -> Tensor:
    """Per-channel ``sum_s g * x``, ReLU-masked by ``out3``, in one fused pass (``scratch3`` is not needed).

    See :func:`ecanet.ops.aten_kernels.gated_channel_dot`.
    """
    if out3 is not None and masked3 is None:
        raise ValueError("gated_channel_dot needs masked3 (a buffer for the masked gradient) when out3 is given")
    n, c, s = x3.shape
    strides = _check_same_layout(grad3, x3, out3, masked3)
    sums = torch.empty(n, c, dtype=_accumulate_dtype(x3.dtype), device=x3.device)
    block_c, block_s = _blocks(x3)
    _kernels().gated_dot[_grid(x3, block_c)](
        grad3,
        x3,
        grad3 if out3 is None else out3,
        grad3 if masked3 is None else masked3,
        sums,
        c,
        s,
        *strides,
        RELU=out3 is not None,
        BLOCK_C=block_c,
        BLOCK_S=block_s,
    )
    return sums


def input_grad(grad3: Tensor, gate: Tensor, shift: Tensor, dx3: Tensor) -> None:
    """Writes ``grad3 * gate + shift`` into ``dx3``; see :func:`ecanet.ops.aten_kernels.input_grad`."""
    _, c, s = grad3.shape
    strides = _check_same_layout(grad3, dx3)
    accumulate = _accumulate_dtype(grad3.dtype)
    block_c, block_s = _blocks(grad3)
    _kernels().input_grad[_grid(grad3, block_c, block_s)](
        grad3,
        gate.to(accumulate).contiguous(),
        shift.to(accumulate).contiguous(),
        dx3,
        c,
        s,
        *strides,
        BLOCK_C=block_c,
        BLOCK_S=block_s,
    )
