"""Two ``torch.library`` operators for ECA in a ResNet bottleneck under ``torch.compile`` at inference.

Compiled, an ECA bottleneck pools the 3x3 branch's activation and carries the pooled means through
the 1x1 projection and its BatchNorm (:func:`ecanet.models.pooling.pooled_through_projection`).
Inductor cannot fuse that mean into the kernel that writes the activation (the convolutions make it
channels-last), and the ``(N, C)`` work after it (the projection's products, the norm, the k taps,
the sigmoid) is some ten small launches per block. On an H100 those cost ECA-ResNet-50 +7.9% over
ResNet-50 (NCHW float32, batch 64; ``docs/performance-notes.md``). These operators do the same work
in two launches per block:

- ``ecanet::norm_relu_sums(y, norm...) -> (out, partial)``: the activation ``relu(norm(y))`` of an
  eval-mode BatchNorm, and its sums per sample and channel over the positions, in the one pass that
  writes it. ``partial`` is ``(N, splits, C)``: on a GPU a sample's positions may be split among
  several programs (:func:`ecanet.ops.triton_kernels.reduction_plan`); on CPU ``splits`` is 1.
- ``ecanet::projected_gate(partial, positions, conv_weight, taps, norm...) -> gate``: ECA's gate
  ``sigmoid(taps * norm(conv(mean)))`` from those sums, ``(N, C_out)``, in one launch that folds the
  taps and the norm's scale into the convolution's weights.

Both are opaque to inductor (it calls them between its own kernels) and run Triton kernels on CUDA
tensors (:mod:`ecanet.ops.projected_gate_jit`) and plain torch operators on CPU tensors, where the
default compiled path is already within a percent of the plain network. float64 tensors take the
plain operators on either device. A network uses them only when asked
(:func:`ecanet.models.resnet.use_projected_gate`); they are not yet timed on a GPU.

Example:
    >>> import torch
    >>> from ecanet.ops.frozen_norm import FrozenNorm
    >>> norm = torch.nn.BatchNorm2d(4).eval()
    >>> frozen = FrozenNorm.of(norm)
    >>> y = torch.randn(2, 4, 3, 3)
    >>> out, partial = torch.ops.ecanet.norm_relu_sums(y, *frozen)
    >>> torch.allclose(out, torch.relu(norm(y))), partial.shape
    (True, torch.Size([2, 1, 4]))
"""

from __future__ import annotations

import functools
import importlib
from types import ModuleType

import torch
import torch.nn.functional as F
from torch import Tensor

from ecanet.ops.channel_gate import channel_gate
from ecanet.ops.frozen_norm import FrozenNorm
from ecanet.ops.triton_kernels import Geometry, accumulate_dtype, reduction_plan
from ecanet.ops.triton_launch import KernelLauncher, PlannedLaunch
from ecanet.ops.views import required_channel_geometry

__all__ = [
    "norm_relu_sums",
    "norm_relu_sums_in_triton",
    "projected_gate",
    "projected_gate_in_triton",
]


def _gate_tile(samples: int) -> dict[str, int]:
    """Samples, output channels and input channels per step of a gate program (a product needs 16
    or more of each).

    All samples of a batch up to 64 in one program: each program reads its output channels' weights
    once per tap, so fewer programs along the samples read the projection's weights fewer times (at
    batch 64 and 2048 x 512 weights, k = 7: 28 MB from the L2, against 112 MB with 16 samples per
    program). 16 output channels per program, so that the last stage's gate has 128 programs, about
    one per SM of an H100, rather than 64. The gate's ``(N, C)`` work is a few microseconds,
    latency-bound: its programs make ``C_in / 64`` dependent steps.

    Example:
        >>> _gate_tile(64), _gate_tile(3)
        ({'BLOCK_N': 64, 'BLOCK_O': 16, 'BLOCK_I': 64}, {'BLOCK_N': 16, 'BLOCK_O': 16, 'BLOCK_I': 64})
    """
    return {"BLOCK_N": min(64, max(16, 1 << max(0, samples - 1).bit_length())), "BLOCK_O": 16, "BLOCK_I": 64}


@functools.cache
def _kernels() -> ModuleType:
    """The ``@triton.jit`` kernels, imported on first use (see :mod:`ecanet.ops.projected_gate_jit`)."""
    return importlib.import_module("ecanet.ops.projected_gate_jit")


@functools.cache
def _launcher(name: str) -> KernelLauncher:
    return KernelLauncher(getattr(_kernels(), name))


def _in_triton(t: Tensor) -> bool:
    """Whether the operators run ``t`` through their Triton kernels: CUDA tensors narrower than float64."""
    return t.is_cuda and t.dtype != torch.float64


def _sums_splits(y: Tensor) -> int:
    """How many parts the activation's sums come in (``partial.shape[1]``), for the real kernels
    and for the shapes ``torch.compile`` traces with alike."""
    if not _in_triton(y):
        return 1
    return reduction_plan(Geometry(*required_channel_geometry(y, 1)), y.device).splits


# Any layout: inductor lays convolution outputs out channels-last (layout optimisation) even in a
# channels-first network, and by default would copy them back to the traced strides before the
# operator and forward again for conv3, two more passes over the activation per block.
@torch.library.custom_op("ecanet::norm_relu_sums", mutates_args=(), tags=(torch.Tag.flexible_layout,))
def norm_relu_sums(
    y: Tensor, running_mean: Tensor, running_var: Tensor, weight: Tensor, bias: Tensor, eps: float
) -> tuple[Tensor, Tensor]:
    """``relu(batch_norm(y))`` with running statistics, and its sums over positions per sample and channel.

    Args:
        y: ``(N, C, H, W)``, contiguous or channels-last.
        running_mean, running_var, weight, bias, eps: the eval-mode BatchNorm (:class:`FrozenNorm`).

    Returns:
        ``(out, partial)``: ``out`` laid out like ``y``, in its dtype; ``partial`` ``(N, splits, C)``
        in float32 (float64 for float64 ``y``), whose sum over ``splits`` is ``out.sum((2, 3))``.
    """
    if _in_triton(y):
        return norm_relu_sums_in_triton(y, FrozenNorm(running_mean, running_var, weight, bias, eps))
    out = torch.relu(F.batch_norm(y, running_mean, running_var, weight, bias, False, 0.0, eps))
    return out, out.sum((2, 3), dtype=accumulate_dtype(y.dtype)).unsqueeze(1)


@norm_relu_sums.register_fake
def _(y: Tensor, *norm: object) -> tuple[Tensor, Tensor]:
    partial = y.new_empty((y.shape[0], _sums_splits(y), y.shape[1]), dtype=accumulate_dtype(y.dtype))
    return torch.empty_like(y), partial


def norm_relu_sums_in_triton(y: Tensor, norm: FrozenNorm) -> tuple[Tensor, Tensor]:
    """:func:`norm_relu_sums` through its Triton kernel, on any device Triton runs on (CPU tensors
    through Triton's interpreter, ``TRITON_INTERPRET=1``)."""
    shape = Geometry(*required_channel_geometry(y, 1))
    launch, splits = _sums_launch(shape, y.device)
    out = torch.empty_like(y)
    if out.stride() != y.stride():
        raise RuntimeError(f"norm_relu_sums needs a dense input, got strides {y.stride()} for shape {list(y.shape)}")
    partial = y.new_empty((shape.n, splits, shape.c), dtype=accumulate_dtype(y.dtype))
    launch(y, out, partial, *norm)
    return out, partial


@functools.lru_cache(maxsize=1024)
def _sums_launch(shape: Geometry, device: torch.device) -> tuple[PlannedLaunch, int]:
    plan = reduction_plan(shape, device)  # splits as many parts as the device's SMs call for
    launch = _launcher("norm_relu_sums_kernel").plan(
        shape.n * plan.splits * plan.c_blocks,
        (shape.c, shape.s, shape.sn, shape.sc, shape.ss, plan.splits, plan.blocks_per_split),
        {"BLOCK_C": plan.block_c, "BLOCK_S": plan.block_s},
    )
    return launch, plan.splits


@torch.library.custom_op("ecanet::projected_gate", mutates_args=())
def projected_gate(
    partial: Tensor,
    positions: int,
    conv_weight: Tensor,
    taps: Tensor,
    running_mean: Tensor,
    running_var: Tensor,
    weight: Tensor,
    bias: Tensor,
    eps: float,
) -> Tensor:
    """ECA's gate ``sigmoid(taps * norm(conv(mean)))`` (zero padding) from sums over ``positions`` positions.

    Args:
        partial: ``(N, splits, C_in)`` sums of the convolution's input (:func:`norm_relu_sums`).
        positions: how many positions were summed.
        conv_weight: the 1x1 convolution's weight ``(C_out, C_in, 1, 1)`` (no bias).
        taps: ECA's kernel ``(1, 1, k)``.
        running_mean, running_var, weight, bias, eps: the eval-mode BatchNorm after the convolution.

    Returns:
        ``(N, C_out)`` in ``partial``'s dtype.
    """
    if _in_triton(partial):
        return projected_gate_in_triton(
            partial, positions, conv_weight, taps, FrozenNorm(running_mean, running_var, weight, bias, eps)
        )
    dtype = partial.dtype
    pooled = partial.sum(1) / positions
    projected = F.linear(pooled, conv_weight.reshape(conv_weight.shape[0], -1).to(dtype))
    scale = torch.rsqrt(running_var.to(dtype) + eps) * weight.to(dtype)
    normalized = torch.addcmul(bias.to(dtype) - running_mean.to(dtype) * scale, projected, scale)
    return channel_gate(normalized, taps, "zeros", "sigmoid")


@projected_gate.register_fake
def _(partial: Tensor, positions: int, conv_weight: Tensor, *taps_and_norm: object) -> Tensor:
    return partial.new_empty((partial.shape[0], conv_weight.shape[0]))


def projected_gate_in_triton(
    partial: Tensor, positions: int, conv_weight: Tensor, taps: Tensor, norm: FrozenNorm
) -> Tensor:
    """:func:`projected_gate` through its Triton kernel (as :func:`norm_relu_sums_in_triton`)."""
    samples, splits, c_in = partial.shape
    gate = partial.new_empty((samples, conv_weight.shape[0]))
    launch = _gate_launch(
        samples, splits, c_in, conv_weight.shape[0], conv_weight.stride()[:2], positions, taps.shape[-1]
    )
    launch(partial.contiguous(), conv_weight, taps.contiguous(), gate, *norm)
    return gate


@functools.lru_cache(maxsize=1024)
def _gate_launch(
    samples: int, splits: int, c_in: int, c_out: int, conv_strides: tuple[int, int], positions: int, k: int
) -> PlannedLaunch:
    tile = _gate_tile(samples)
    programs = -(-c_out // tile["BLOCK_O"]) * -(-samples // tile["BLOCK_N"])
    scalars = (samples, c_in, c_out, splits, *conv_strides, 1.0 / positions)
    return _launcher("projected_gate_kernel").plan(programs, scalars, {"K": k, **tile})
