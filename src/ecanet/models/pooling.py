"""ECA's pooled descriptor of a block output, computed before the block's last BatchNorm (and 1x1 convolution).

Global average pooling commutes with a BatchNorm in eval mode and with a 1x1 convolution (stride
1, no padding), both being affine per position: ``mean(bn(y)) = bn(mean(y))`` and
``mean(bn(conv(z))) = bn(conv(mean(z)))``. The result is ECA's descriptor exactly, up to rounding.

Through the projection (:func:`pooled_through_projection`): a ResNet bottleneck's 1x1 convolution
expands ``planes`` channels to ``4 * planes``, so pooling its input ``z`` reads a quarter of the
bytes that pooling the block output would. The detour pays only where the feature maps are large
against the channel counts: for ``N`` samples of ``S`` positions it reads ``N * C_in * S`` values
of ``z`` and ``C_in * C_out`` weights, against ``N * C_out * S`` values of the output. In a
ResNet-50 at 224 px and batch 8 that holds in the first three stages (56x56 to 14x14) and fails
in the last (7x7), where the weights outweigh the maps; for single images it fails from 14x14.
Where it fails, ECA's kernels pool the output sample by sample from cache (eagerly) or inductor
pools the BatchNorm's input (compiled, below). Measured on ECA-ResNet-50, batch 8: with the detour
in every stage the 14x14 and 7x7 blocks spent 7.9 ms per eager forward on it; compiled, pooling
the 14x14 outputs instead of projecting cost 3 ms per forward (inductor reads channels-last maps
with a stride of one row per position).

Through the norm (:func:`pooled_through_norm`): pooling the convolution's output ``y`` instead of
``bn(y)`` reads the same bytes, but it lets ``torch.compile`` keep ``bn(y)`` out of memory: with
two consumers (the pooling and the block tail) inductor writes the BatchNorm's output and reads
it twice; pooled through the norm, ``bn(y)`` has only the tail as consumer and fuses into it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

from ecanet.functional import eca_descriptor
from ecanet.ops import eager_pooled_projection
from ecanet.ops.frozen_norm import is_frozen_batchnorm

__all__ = ["is_pointwise", "pooled_through_norm", "pooled_through_projection"]


def is_pointwise(conv: nn.Module) -> bool:
    """Whether ``conv`` is a 1x1, stride-1, unpadded, ungrouped ``nn.Conv2d``: an affine map per
    position, which commutes with pooling over positions.

    Example:
        >>> is_pointwise(nn.Conv2d(4, 16, 1)), is_pointwise(nn.Conv2d(4, 16, 3, padding=1))
        (True, False)
    """
    return (
        isinstance(conv, nn.Conv2d)
        and conv.kernel_size == (1, 1)
        and conv.stride == (1, 1)
        and conv.padding == (0, 0)
        and conv.groups == 1
    )


def _cheaper_than_pooling_output(z: Tensor, conv: nn.Conv2d) -> bool:
    """Whether pooling ``z`` and reading the weights moves fewer values than pooling the output
    would; ``False`` where ``z``'s sizes are symbolic (``torch.export`` with a dynamic batch,
    ``torch.compile(dynamic=True)``): the choice would constrain them, which an export refuses."""
    if any(isinstance(size, torch.SymInt) for size in z.shape):
        return False
    samples, positions = z.shape[0], z.shape[2] * z.shape[3]
    return samples * conv.in_channels * positions + conv.in_channels * conv.out_channels < (
        samples * conv.out_channels * positions
    )


def _normalized(pooled: Tensor, norm: nn.BatchNorm2d) -> Tensor:
    """``norm`` applied to a pooled ``(N, C)`` tensor, in its dtype: ``pooled * scale + shift`` per channel."""
    dtype = pooled.dtype
    scale = torch.rsqrt(norm.running_var.to(dtype) + norm.eps)
    if norm.weight is not None:
        scale = scale * norm.weight.to(dtype)
    shift = -norm.running_mean.to(dtype) * scale
    if norm.bias is not None:
        shift = shift + norm.bias.to(dtype)
    return torch.addcmul(shift, pooled, scale)


def pooled_through_norm(y: Tensor, norm: nn.Module) -> Tensor | None:
    """``norm(y)`` averaged over H and W, ``(N, C)``, from the pooled ``y``, or ``None``.

    Applies when ``norm`` is an ``nn.BatchNorm2d`` in eval mode with running statistics.

    Args:
        y: the BatchNorm's input ``(N, C, H, W)``.
        norm: the BatchNorm.

    Returns:
        ``(N, C)`` in float32 (float64 for float64 input), or ``None``.

    Example:
        >>> norm = nn.BatchNorm2d(4).eval()
        >>> y = torch.randn(2, 4, 5, 5)
        >>> torch.allclose(pooled_through_norm(y, norm), norm(y).mean((2, 3)), atol=1e-6)
        True
    """
    if not is_frozen_batchnorm(norm):
        return None
    return _normalized(eca_descriptor(y), norm)


def pooled_through_projection(z: Tensor, conv: nn.Module, norm: nn.Module) -> Tensor | None:
    """``norm(conv(z))`` averaged over H and W, ``(N, C_out)``, from the pooled ``z``, or ``None``.

    Applies to CPU tensors, and to any under ``torch.compile``, when ``conv`` is a 1x1, stride-1,
    unpadded, ungrouped ``nn.Conv2d`` and ``norm`` an ``nn.BatchNorm2d`` in eval mode with running
    statistics, and when it reads fewer values than pooling the output would (see the module's
    notes). Not on a GPU eagerly: there the detour's ten-odd small operations cost more in launches
    than one more pooling pass costs in bandwidth (eager ECA-ResNet-50 at batch 64 on an H200 spent
    133 conversion launches per forward on it); compiled, inductor fuses them into a few kernels.

    Args:
        z: the convolution's input ``(N, C_in, H, W)``.
        conv: the 1x1 convolution.
        norm: the BatchNorm after it.

    Returns:
        ``(N, C_out)`` in float32 (float64 for float64 input), or ``None``.

    Example:
        >>> conv, norm = nn.Conv2d(4, 16, 1, bias=False), nn.BatchNorm2d(16).eval()
        >>> z = torch.randn(2, 4, 5, 5)
        >>> torch.allclose(pooled_through_projection(z, conv, norm), norm(conv(z)).mean((2, 3)), atol=1e-6)
        True
    """
    if (
        isinstance(z, fx.Proxy)  # a torch.fx trace records the plain path (the choice depends on z's size)
        or (z.device.type != "cpu" and not torch.compiler.is_compiling())
        or not is_pointwise(conv)
        or not is_frozen_batchnorm(norm)
        or not _cheaper_than_pooling_output(z, conv)
    ):
        return None
    if not torch.jit.is_scripting():
        eager = eager_pooled_projection(
            z, conv.weight, conv.bias, norm.running_mean, norm.running_var, norm.weight, norm.bias, norm.eps
        )
        if eager is not None:
            return eager
    pooled = eca_descriptor(z)
    dtype = pooled.dtype
    weight = conv.weight.reshape(conv.out_channels, conv.in_channels).to(dtype)
    bias = None if conv.bias is None else conv.bias.to(dtype)
    return _normalized(F.linear(pooled, weight, bias), norm)
