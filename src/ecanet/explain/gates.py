"""The channel gates of a network's attention layers: which layers have one, and its value for an input."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ecanet import functional as F_eca
from ecanet.layers import CBAM, ECA, SE
from ecanet.layers.se import checked_descriptor, excitation

__all__ = ["ATTENTION_LAYERS", "attention_layers", "channel_gate", "gate_replaceable"]

# The layers whose channel gate can be read: ECA, SE, and CBAM's channel branch.
ATTENTION_LAYERS = (ECA, SE, CBAM)


def attention_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The ``(qualified name, module)`` of every ECA, SE and CBAM layer of ``model``, in module order.

    Example:
        >>> from ecanet import create_model
        >>> [name for name, _ in attention_layers(create_model("eca_resnet18"))][:2]
        ['layer1.0.eca', 'layer1.1.eca']
    """
    return [(name, module) for name, module in model.named_modules() if isinstance(module, ATTENTION_LAYERS)]


def channel_gate(layer: nn.Module, x: Tensor) -> Tensor:
    """The per-channel attention weights that ``layer`` multiplies its input ``x`` by, in float32 or float64.

    For CBAM, the weights of its channel branch (the spatial branch follows them).

    Args:
        layer: an :class:`~ecanet.ECA`, :class:`~ecanet.SE` or :class:`~ecanet.CBAM` module.
        x: the layer's input.

    Shape:
        - Input: ``(N, C, *)``, or ``(N, *, C)`` for a channels-last layer.
        - Output: ``(N, C)``.

    Example:
        >>> layer = ECA(16)
        >>> gate = channel_gate(layer, torch.randn(2, 16, 5, 5))
        >>> gate.shape, bool(((gate > 0) & (gate < 1)).all())
        (torch.Size([2, 16]), True)
    """
    if isinstance(layer, ECA):
        weight = layer.conv.weight
        return F_eca.eca_gate(x, weight, layer.padding, layer.pooling, layer.gate, layer.channel_dim)
    if isinstance(layer, SE):
        descriptor = checked_descriptor(x, layer.channels, layer.channel_dim, "SE")
        return torch.sigmoid(_at_least_float32(excitation(descriptor, layer.fc1, layer.fc2)))
    if isinstance(layer, CBAM):
        average = checked_descriptor(x, layer.channels, layer.channel_dim, "CBAM")
        cdim = 1 if layer.channel_dim == 1 else x.dim() - 1
        maximum = x.amax(dim=[d for d in range(1, x.dim()) if d != cdim])
        logits = excitation(average, layer.fc1, layer.fc2) + excitation(maximum, layer.fc1, layer.fc2)
        return torch.sigmoid(_at_least_float32(logits))
    names = ", ".join(kind.__name__ for kind in ATTENTION_LAYERS)
    raise TypeError(f"layer must be one of {names}, got {type(layer).__name__}")


def _at_least_float32(logits: Tensor) -> Tensor:
    """Half-precision logits in float32 (as ECA's gate is computed); float32 and float64 unchanged."""
    return logits.to(torch.promote_types(logits.dtype, torch.float32))


def gate_replaceable(layer: nn.Module) -> bool:
    """Whether the layer's output is its input times its gate and nothing else (ECA and SE, not CBAM,
    whose spatial branch follows), so that a different gate can stand in for it.

    Example:
        >>> gate_replaceable(ECA(16)), gate_replaceable(CBAM(16))
        (True, False)
    """
    return isinstance(layer, (ECA, SE))
