"""The two containers a retrofit leaves in a model, and nothing else.

:class:`ECAAfter` takes the place of the module it follows (``bn3`` becomes ``ECAAfter(bn3, eca)``)
and :class:`ECAInsteadOf` takes the place of a squeeze-and-excitation module. Both keep the
original module object, so :func:`ecanet.remove_eca` puts back exactly what was there.
"""

import torch
from torch import Tensor, nn

from ecanet.layers.eca import ECA

__all__ = ["ECAAfter", "ECAInsteadOf"]


class ECAAfter(nn.Module):
    """``eca(module(x))``: ECA applied to the output of an existing module.

    The original module stays a child under the name ``module``, with its parameters, buffers and
    hooks untouched, so the state-dict keys of a wrapped ``layer1.0.bn3`` read
    ``layer1.0.bn3.module.weight`` and ``layer1.0.bn3.eca.conv.weight``.

    Args:
        module: the module whose output ECA rescales (usually the last normalization of a
            residual branch).
        eca: the ECA layer.

    Shape:
        - Input: whatever ``module`` takes.
        - Output: ``module``'s output, rescaled per channel.

    Example:
        >>> import torch
        >>> wrapped = ECAAfter(nn.BatchNorm2d(16), ECA(16))
        >>> wrapped(torch.randn(2, 16, 8, 8)).shape
        torch.Size([2, 16, 8, 8])
    """

    def __init__(self, module: nn.Module, eca: ECA) -> None:
        super().__init__()
        self.module = module
        self.eca = eca

    def forward(self, x: Tensor) -> Tensor:
        # Nested, so that TorchScript (which drops the outer branch) never compiles the inner one.
        if not torch.jit.is_scripting():  # noqa: SIM102
            if isinstance(x, Tensor):  # not a trace's proxy, nor whatever else the module may take
                # On a GPU at inference an eval-mode BatchNorm then runs inside ECA's rescale.
                return self.eca.after_norm(x, self.module)
        return self.eca(self.module(x))

    def original(self) -> nn.Module:
        """The module to put back on removal (a method, not a property: TorchScript compiles properties)."""
        return self.module


class ECAInsteadOf(nn.Module):
    """ECA standing in for a squeeze-and-excitation module of the same width.

    The replaced module is kept outside the module tree (not a child): its parameters leave the
    model, its optimizer and its state dict, which is the point of the swap, yet
    :func:`ecanet.remove_eca` can still restore it.

    Args:
        eca: the ECA layer that does the work.
        replaced: the module it replaces.

    Shape:
        - Input: ``(N, C, *)`` or ``(N, *, C)``, as for :class:`ecanet.ECA`.
        - Output: same shape.

    Example:
        >>> import torch
        >>> from ecanet.layers.se import SE
        >>> swap = ECAInsteadOf(ECA(64), SE(64))
        >>> sum(p.numel() for p in swap.parameters())  # the SE's 512 weights are gone
        3
        >>> swap(torch.randn(2, 64, 4, 4)).shape
        torch.Size([2, 64, 4, 4])
    """

    def __init__(self, eca: ECA, replaced: nn.Module) -> None:
        super().__init__()
        self.eca = eca
        # object.__setattr__ keeps the module out of _modules (parameters, state_dict, .to()).
        object.__setattr__(self, "_replaced", replaced)

    def forward(self, x: Tensor) -> Tensor:
        return self.eca(x)

    def original(self) -> nn.Module:
        """The replaced module, on the device and dtype of the ECA weight (the model may have moved)."""
        replaced: nn.Module = self.__dict__["_replaced"]
        weight = self.eca.conv.weight
        tensors = [*replaced.parameters(), *replaced.buffers()]
        if any(t.device != weight.device for t in tensors) or any(
            t.is_floating_point() and t.dtype != weight.dtype for t in tensors
        ):
            replaced.to(device=weight.device, dtype=weight.dtype)
        return replaced

    def extra_repr(self) -> str:
        return f"replaces={type(self.__dict__['_replaced']).__name__}"
