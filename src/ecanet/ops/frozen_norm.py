"""An eval-mode BatchNorm folded into ECA's rescale: the block's last norm at inference, for free.

At inference a BatchNorm normalises with its running statistics, so it is an affine map per
channel, ``norm(y) = y * scale + shift``, and ECA's pooled mean commutes with it:
``mean(norm(y)) = mean(y) * scale + shift``. ECA's rescale reads ``y`` anyway, so it can apply
the norm on the way; on a GPU that saves a residual block the BatchNorm's launch and its pass over
memory (read ``y``, write ``norm(y)``), against the plain block's BatchNorm, addition and ReLU.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

__all__ = ["FrozenNorm", "is_frozen_batchnorm"]


def is_frozen_batchnorm(norm: nn.Module) -> bool:
    """Whether ``norm`` is an ``nn.BatchNorm2d`` that normalises with running statistics: eval mode,
    statistics tracked (in training mode BatchNorm uses the batch's statistics, which are not
    known before its input is).

    Example:
        >>> is_frozen_batchnorm(nn.BatchNorm2d(4).eval()), is_frozen_batchnorm(nn.BatchNorm2d(4))
        (True, False)
    """
    # The module's dictionaries, not its attributes: nn.Module's attribute lookup of a buffer or
    # parameter costs about half a microsecond, and blocks ask this on every inference call.
    if not isinstance(norm, nn.BatchNorm2d) or norm.training:
        return False
    buffers = norm._buffers
    return buffers.get("running_mean") is not None and buffers.get("running_var") is not None


class FrozenNorm(NamedTuple):
    """An eval-mode BatchNorm as the rescale applies it to its input, ``y * scale + shift`` per channel.

    ``scale = weight / sqrt(running_var + eps)`` and ``shift = bias - running_mean * scale`` are
    worked out inside the kernel, so applying the norm costs no launch of its own.

    Example:
        >>> frozen = FrozenNorm.of(nn.BatchNorm2d(4).eval())
        >>> frozen.fits(4, torch.device("cpu")), FrozenNorm.of(nn.BatchNorm2d(4))
        (True, None)
    """

    running_mean: Tensor
    running_var: Tensor
    weight: Tensor
    bias: Tensor
    eps: float

    @classmethod
    def of(cls, norm: nn.Module) -> FrozenNorm | None:
        """``norm``'s tensors if it is a frozen BatchNorm (:func:`is_frozen_batchnorm`) with an affine,
        else ``None``."""
        if not is_frozen_batchnorm(norm):
            return None
        parameters, buffers = norm._parameters, norm._buffers
        weight, bias = parameters.get("weight"), parameters.get("bias")
        if weight is None or bias is None:
            return None
        return cls(buffers["running_mean"], buffers["running_var"], weight, bias, norm.eps)

    def fits(self, channels: int, device: torch.device) -> bool:
        """Whether every tensor holds ``channels`` floating-point values, dense, on ``device``."""
        for t in self[:4]:
            if t.device != device or t.shape != (channels,) or t.stride() != (1,) or not t.is_floating_point():
                return False
        return True
