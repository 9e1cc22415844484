"""ECA's pooled descriptor of a block output, computed through the block's last 1x1 convolution.

Global average pooling commutes with a 1x1 convolution (stride 1, no padding) and with a
BatchNorm in eval mode, both being affine per position:
``mean(bn(conv(z))) = bn(conv(mean(z)))``. A ResNet bottleneck's 1x1 convolution expands
``planes`` channels to ``4 * planes``, so pooling its input ``z`` reads a quarter of the bytes that
pooling the block output would, and under ``torch.compile`` the sum over ``z`` fuses into the
kernel that produces ``z``. The result is ECA's descriptor exactly, up to rounding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ecanet.functional import eca_descriptor

__all__ = ["pooled_through_projection"]


def _is_pointwise(conv: nn.Module) -> bool:
    return (
        isinstance(conv, nn.Conv2d)
        and conv.kernel_size == (1, 1)
        and conv.stride == (1, 1)
        and conv.padding == (0, 0)
        and conv.groups == 1
    )


def pooled_through_projection(z: Tensor, conv: nn.Module, norm: nn.Module) -> Tensor | None:
    """``norm(conv(z))`` averaged over H and W, ``(N, C_out)``, from the pooled ``z``, or ``None``.

    Applies when ``conv`` is a 1x1, stride-1, unpadded, ungrouped ``nn.Conv2d`` and ``norm`` an
    ``nn.BatchNorm2d`` in eval mode with running statistics (in training mode BatchNorm uses the
    batch's statistics, which are not known before ``conv(z)`` is computed).

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
    if not _is_pointwise(conv) or not isinstance(norm, nn.BatchNorm2d) or norm.training:
        return None
    if norm.running_mean is None or norm.running_var is None:
        return None
    pooled = eca_descriptor(z)
    dtype = pooled.dtype
    weight = conv.weight.reshape(conv.out_channels, conv.in_channels).to(dtype)
    bias = None if conv.bias is None else conv.bias.to(dtype)
    projected = F.linear(pooled, weight, bias)
    scale = torch.rsqrt(norm.running_var.to(dtype) + norm.eps)
    if norm.weight is not None:
        scale = scale * norm.weight.to(dtype)
    shift = -norm.running_mean.to(dtype) * scale
    if norm.bias is not None:
        shift = shift + norm.bias.to(dtype)
    return torch.addcmul(shift, projected, scale)
