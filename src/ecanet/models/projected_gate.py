"""A ResNet bottleneck's forward through ECA's compiled-inference operators (:mod:`ecanet.ops.projected_gate`).

Under ``torch.compile`` at inference, a bottleneck switched on with
:func:`ecanet.models.resnet.use_projected_gate` runs

    y = conv2(relu(bn1(conv1(x))))
    out, sums = norm_relu_sums(y, bn2)                    # relu(bn2(y)) and its sums, one pass
    gate = projected_gate(sums, conv3, eca, bn3)          # ECA's gate through conv3 and bn3, one launch
    relu(bn3(conv3(out)) * gate + shortcut(x))            # inductor fuses the tail as without ECA

in place of the default compiled path, whose pooling of ``relu(bn2(y))`` inductor cannot fuse into
the kernel writing it and whose ``(N, C)`` work is some ten launches. Everywhere else (eager, in
training, under ``torch.export`` or tracing, with forward hooks, or a layer the operators do not
cover) the block takes its default path. Not yet timed on a GPU: see ``docs/performance.md``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ecanet.layers.eca import has_forward_hooks
from ecanet.models.pooling import is_pointwise
from ecanet.ops.frozen_norm import FrozenNorm

__all__ = ["forward_through_projected_gate", "takes_projected_gate"]


def takes_projected_gate(block: nn.Module, x: Tensor) -> bool:
    """Whether ``block`` (a :class:`~ecanet.models.resnet.Bottleneck`) runs ``x`` through the operators.

    Only while ``torch.compile`` traces (not ``torch.export``), with grad mode off and ``x``'s sizes
    static, when the block's ECA is the paper's (average pooling, one kernel with zero padding, the
    sigmoid), its second and third BatchNorms are eval-mode with affine parameters, ``conv3`` a plain
    1x1 convolution, and no forward hook watches any module the operators replace.
    """
    eca = block.eca
    return (
        torch.compiler.is_compiling()
        and not torch.compiler.is_exporting()
        and not torch.is_grad_enabled()
        and eca is not None
        and (eca.pooling, eca.padding, eca.gate, eca.channel_dim) == ("avg", "zeros", "sigmoid", 1)
        and eca.shared
        and not any(isinstance(size, torch.SymInt) for size in x.shape)
        and is_pointwise(block.conv3)
        and block.conv3.bias is None
        and FrozenNorm.of(block.bn2) is not None
        and FrozenNorm.of(block.bn3) is not None
        and not any(has_forward_hooks(m) for m in (block.bn2, block.relu, block.conv3, block.bn3, eca))
    )


def forward_through_projected_gate(block: nn.Module, x: Tensor) -> Tensor:
    """``block(x)`` through ``ecanet::norm_relu_sums`` and ``ecanet::projected_gate``, for a block
    that :func:`takes_projected_gate`."""
    y = block.conv2(block.relu(block.bn1(block.conv1(x))))
    out, sums = torch.ops.ecanet.norm_relu_sums(y, *FrozenNorm.of(block.bn2))
    positions = y.shape[2] * y.shape[3]
    gate = torch.ops.ecanet.projected_gate(
        sums, positions, block.conv3.weight, block.eca.conv.weight, *FrozenNorm.of(block.bn3)
    )
    out = block.bn3(block.conv3(out))
    identity = x if block.downsample is None else block.downsample(x)
    # As the default compiled tail: the gate in the activation's dtype, then the shortcut, then the ReLU.
    return out.mul_(gate.to(out.dtype)[:, :, None, None]).add_(identity).relu_()
