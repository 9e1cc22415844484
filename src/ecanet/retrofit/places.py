"""What a placement strategy finds: candidate places, skipped places, and the module walk they share."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from ecanet.retrofit.wrappers import ECAAfter, ECAInsteadOf

__all__ = ["Candidate", "SkippedPlace", "join", "walk"]


@dataclass(frozen=True)
class Candidate:
    """A place where ECA could go, before patterns, thresholds and kernel sizes are applied.

    Attributes:
        name: qualified name of the module ECA follows (``"insert"``) or replaces (``"replace_se"``).
        action: ``"insert"`` or ``"replace_se"``.
        strategy: how the place was found, e.g. ``"family: torchvision ResNet"``, ``"fx residual"``.
        module_type: class name of the module at ``name``.
        channels: width of the tensor ECA will rescale.
        channel_dim: ``1`` (channels first) or ``-1`` (channels last) for that tensor.
    """

    name: str
    action: str
    strategy: str
    module_type: str
    channels: int
    channel_dim: int


@dataclass(frozen=True)
class SkippedPlace:
    """A place that got no ECA, and why.

    Attributes:
        name: qualified module name (or, for an fx addition, its enclosing module and node).
        reason: one sentence for the report.
    """

    name: str
    reason: str


def join(prefix: str, name: str) -> str:
    """Qualified name of child ``name`` of the module called ``prefix`` (``""`` is the root).

    Example:
        >>> join("", "layer1"), join("layer1.0", "bn3")
        ('layer1', 'layer1.0.bn3')
    """
    return f"{prefix}.{name}" if prefix else name


def walk(module: nn.Module, visit: Callable[[str, nn.Module], bool], prefix: str = "") -> None:
    """Calls ``visit(name, child)`` for every submodule, top down, entering it when ``visit`` says so.

    The containers of an earlier retrofit are visited but never entered: what they hold is not
    part of the model a strategy should look at.

    Args:
        module: the root; it is not visited itself.
        visit: returns ``True`` to descend into the child.
        prefix: qualified name of ``module``.

    Example:
        >>> names = []
        >>> walk(nn.Sequential(nn.Sequential(nn.ReLU())), lambda n, m: names.append(n) is None)
        >>> names
        ['0', '0.0']
    """
    for name, child in module.named_children():
        full = join(prefix, name)
        if visit(full, child) and not isinstance(child, (ECAAfter, ECAInsteadOf)):
            walk(child, visit, full)
