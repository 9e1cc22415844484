"""The channel gates of a network's attention layers: which layers have one, and its value for an input."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ecanet import functional as F_eca
from ecanet.layers import CBAM, ECA, SE
from ecanet.layers.se import checked_descriptor

__all__ = [
    "ATTENTION_LAYERS",
    "OTHER_CHANNEL_GATES",
    "attention_layers",
    "channel_gate",
    "gate_from_output",
    "gate_replaceable",
]

# The layers whose channel gate is computed from their input: ECA, SE, and CBAM's channel branch.
ATTENTION_LAYERS = (ECA, SE, CBAM)

# Channel attention of other libraries, by qualified class name: each multiplies its input by one
# gate per channel, which is read from its input and output (:func:`gate_from_output`).
OTHER_CHANNEL_GATES = frozenset(
    {
        "torchvision.ops.misc.SqueezeExcitation",
        "timm.layers.squeeze_excite.SEModule",
        "timm.layers.squeeze_excite.EffectiveSEModule",
        "timm.layers.eca.EcaModule",
        "timm.layers.eca.CecaModule",
        "timm.models._efficientnet_blocks.SqueezeExcite",
    }
)


def _other_channel_gate(module: nn.Module) -> bool:
    """Whether ``module`` is (a subclass of) one of :data:`OTHER_CHANNEL_GATES`."""
    return any(f"{kind.__module__}.{kind.__qualname__}" in OTHER_CHANNEL_GATES for kind in type(module).__mro__)


def attention_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The ``(qualified name, module)`` of every channel attention layer of ``model``, in module order:
    ecanet's ECA, SE and CBAM, and those of torchvision and timm named in :data:`OTHER_CHANNEL_GATES`.

    Example:
        >>> from ecanet import create_model
        >>> [name for name, _ in attention_layers(create_model("eca_resnet18"))][:2]
        ['layer1.0.eca', 'layer1.1.eca']
    """
    return [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, ATTENTION_LAYERS) or _other_channel_gate(module)
    ]


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
        return torch.sigmoid(_at_least_float32(layer.excitation(descriptor)))
    if isinstance(layer, CBAM):
        return torch.sigmoid(_at_least_float32(layer.channel_logits(x)))
    names = ", ".join(kind.__name__ for kind in ATTENTION_LAYERS)
    raise TypeError(f"layer must be one of {names}, got {type(layer).__name__}")


def _at_least_float32(logits: Tensor) -> Tensor:
    """Half-precision logits in float32 (as ECA's gate is computed); float32 and float64 unchanged."""
    return logits.to(torch.promote_types(logits.dtype, torch.float32))


def gate_from_output(x: Tensor, y: Tensor) -> Tensor:
    """The gate ``g`` per image and channel of a layer whose output ``y`` is its input ``x`` times ``g``.

    Each gate is the least-squares fit over the channel's positions, ``sum(x * y) / sum(x * x)``,
    so it is exact for any layer that only rescales channels; NaN for a channel that is zero all
    over an image (its gate cannot be known, and does not matter).

    Args:
        x: the layer's input, channels first.
        y: its output.

    Shape:
        - Input: ``(N, C, *)`` both.
        - Output: ``(N, C)``, float32 (float64 for float64 inputs).

    Raises:
        ValueError: ``y`` is not ``x`` rescaled channel by channel (beyond rounding), or it is
            ``x`` itself (a layer that works in place hides its input).

    Example:
        >>> x = torch.randn(2, 3, 4, 4)
        >>> gate_from_output(x, x * torch.tensor([0.5, 1.0, 0.25]).view(1, 3, 1, 1))[0]
        tensor([0.5000, 1.0000, 0.2500])
    """
    if x.shape != y.shape or x.dim() < 3:
        raise ValueError(f"input and output must be (N, C, *) of one shape, got {list(x.shape)} and {list(y.shape)}")
    if y.data_ptr() == x.data_ptr():
        raise ValueError("the layer works in place, so its input is gone and its gate cannot be read")
    # Half-precision outputs are rounded products, and are checked more loosely.
    tolerance = 1e-3 if x.dtype in (torch.float32, torch.float64) else 3e-2
    dtype = torch.promote_types(x.dtype, torch.float32)
    x, y = x.detach().to(dtype).flatten(2), y.detach().to(dtype).flatten(2)
    power = x.square().sum(2)
    gate = ((x * y).sum(2) / power).where(power > 0, torch.nan)
    error = (y - x * gate.nan_to_num(0.0)[..., None]).norm()
    if error > tolerance * y.norm() + 1e-30:
        relative = float(error / y.norm().clamp_min(1e-30))
        raise ValueError(f"the output is not the input times one gate per channel (relative error {relative:.2g})")
    return gate


def gate_replaceable(layer: nn.Module) -> bool:
    """Whether the layer's output is its input times its gate and nothing else (ECA, SE and the other
    libraries' layers; not CBAM, whose spatial branch follows), so that a fixed gate can stand in.

    Example:
        >>> gate_replaceable(ECA(16)), gate_replaceable(CBAM(16))
        (True, False)
    """
    return not isinstance(layer, CBAM)
