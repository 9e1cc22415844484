"""The implementations ecanet's ECA is measured against, built with one shared kernel for fairness.

- ``blog``: the implementation found in most tutorials and blog posts (and, in spirit, the authors'
  repository): ``AdaptiveAvgPool2d(1)``, ``Conv1d`` over the squeezed channels, ``sigmoid``,
  ``x * y.expand_as(x)``.
- ``timm``: ``timm.layers.EcaModule`` (``x.mean``, ``Conv1d``, sigmoid, ``x * y``), when timm is installed.
- ``se``: ecanet's own Squeeze-and-Excitation layer (reduction 16), the paper's comparison point.
"""

from __future__ import annotations

import importlib.util

import torch
from torch import Tensor, nn

from ecanet.layers.eca import ECA
from ecanet.layers.se import SE

__all__ = ["BlogECA", "attention_candidates", "timm_available"]


class BlogECA(nn.Module):
    """The tutorial ECA: ``AdaptiveAvgPool2d`` + ``Conv1d`` + ``sigmoid`` + ``expand_as``, 2-D inputs only.

    Args:
        kernel_size: odd number of taps k.

    Shape:
        - Input: ``(N, C, H, W)``
        - Output: ``(N, C, H, W)``

    Example:
        >>> BlogECA(3)(torch.randn(2, 8, 4, 4)).shape
        torch.Size([2, 8, 4, 4])
    """

    def __init__(self, kernel_size: int = 3) -> None:
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.conv = nn.Conv1d(1, 1, kernel_size=kernel_size, padding=(kernel_size - 1) // 2, bias=False)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: Tensor) -> Tensor:
        y = self.avg_pool(x)
        y = self.conv(y.squeeze(-1).transpose(-1, -2)).transpose(-1, -2).unsqueeze(-1)
        y = self.sigmoid(y)
        return x * y.expand_as(x)


def timm_available() -> bool:
    """Whether timm (a ``dev`` extra) is installed, so its ``EcaModule`` can be measured.

    Example:
        >>> isinstance(timm_available(), bool)
        True
    """
    return importlib.util.find_spec("timm") is not None


def saturating_tap(kernel_size: int) -> float:
    """The tap value that saturates the gate for inputs in ``[0.5, 1.5)``: ``56 / (k + 1)``.

    A zero-padded edge channel sees ``(k + 1) / 2`` taps of a mean of at least 0.5, so its logit is
    at least 14 (gate above ``1 - 8.4e-7``). An inner channel sees ``k`` taps of a mean below 1.5,
    so its logit stays below 84 and ``exp(-logit)`` never becomes a denormal float32 (below
    ``exp(-87)``).

    Args:
        kernel_size: odd k.

    Example:
        >>> saturating_tap(3)
        14.0
    """
    return 56.0 / (kernel_size + 1)


def attention_candidates(channels: int, kernel_size: int) -> dict[str, nn.Module]:
    """Fresh attention layers for ``channels``, every ECA sharing the same ``kernel_size``-tap kernel.

    Every tap of the shared kernel is ``saturating_tap(kernel_size)``: on benchmark inputs (values in
    ``[0.5, 1.5)``) the gate is then within ``1e-6`` of 1 (zero-padded edge channels included), so
    an in-place layer called thousands of times on the same tensor keeps its values (no drift into
    denormal numbers, which would slow everything down).

    Args:
        channels: C.
        kernel_size: odd k for every ECA variant.

    Returns:
        name -> module: ``timm`` (when installed), ``blog``, ``se``, ``ecanet``, ``ecanet-inplace``.

    Example:
        >>> sorted(attention_candidates(64, 3))[:3]
        ['blog', 'ecanet', 'ecanet-inplace']
    """
    layers: dict[str, nn.Module] = {}
    if timm_available():
        from timm.layers import EcaModule

        layers["timm"] = EcaModule(kernel_size=kernel_size)  # channels=None: timm would pick its own k
    layers["blog"] = BlogECA(kernel_size)
    layers["se"] = SE(channels)
    layers["ecanet"] = ECA(channels, kernel_size)
    layers["ecanet-inplace"] = ECA(channels, kernel_size, inplace=True)
    with torch.no_grad():
        for name, layer in layers.items():
            if name != "se":
                layer.conv.weight.fill_(saturating_tap(kernel_size))
    return layers
