"""Parameters, attention parameters, FLOPs and MACs of a model, in decimal and in the paper's units.

The ECA paper reports parameters in units of 2^20 ("24.37M" for ResNet-50 is 25,557,032 / 2^20)
and FLOPs as multiply-adds in units of 2^30. :class:`ModelProfile` holds exact counts and offers
both conventions, so numbers can be held against the paper's Table 3 (:data:`PAPER_TABLE3`).
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ecanet.layers.factory import ATTENTION_LAYERS
from ecanet.models.registry import create_model
from ecanet.modes import evaluation_mode

__all__ = ["PAPER_TABLE3", "ModelProfile", "profile_model", "profile_registered_model"]

MEGA, GIGA = 10**6, 10**9
MEBI, GIBI = 2**20, 2**30

# The paper's Table 3 (ImageNet, 224 px): (params / 2^20, multiply-adds / 2^30). The paper prints
# MobileNetV2's FLOPs in units of 2^20 ("319.4M"), converted here.
PAPER_TABLE3: dict[str, tuple[float, float]] = {
    "resnet50": (24.37, 3.86),
    "se_resnet50": (26.77, 3.87),
    "cbam_resnet50": (26.77, 3.87),
    "eca_resnet50": (24.37, 3.86),
    "resnet101": (42.49, 7.34),
    "eca_resnet101": (42.49, 7.35),
    "resnet152": (57.40, 10.82),
    "eca_resnet152": (57.40, 10.83),
    "mobilenet_v2": (3.34, 319.4 / 1024),
    "se_mobilenet_v2": (3.40, 320.1 / 1024),
    "eca_mobilenet_v2": (3.34, 319.9 / 1024),
}


@dataclass(frozen=True)
class ModelProfile:
    """Exact counts for one model and one input size.

    Attributes:
        params: trainable and frozen parameters (elements).
        attention_params: the part of ``params`` inside attention modules (ECA, SE, CBAM).
        flops: floating-point operations of one forward pass, as counted by
            ``torch.utils.flop_counter.FlopCounterMode``: convolutions and matrix products at 2 FLOPs
            per multiply-add. Element-wise work (BatchNorm, activations, pooling, the attention's
            rescale) is not counted.
        macs: multiply-adds, ``flops // 2``.
        input_size: the input shape used.
    """

    params: int
    attention_params: int
    flops: int
    macs: int
    input_size: tuple[int, ...]

    @property
    def params_millions(self) -> float:
        """Parameters in millions (10^6)."""
        return self.params / MEGA

    @property
    def params_paper_units(self) -> float:
        """Parameters in the paper's units of 2^20."""
        return self.params / MEBI

    @property
    def gmacs(self) -> float:
        """Multiply-adds in billions (10^9)."""
        return self.macs / GIGA

    @property
    def macs_paper_units(self) -> float:
        """Multiply-adds in the paper's "FLOPs" units of 2^30."""
        return self.macs / GIBI


def profile_model(model: nn.Module, input_size: Sequence[int] = (1, 3, 224, 224)) -> ModelProfile:
    """Counts the parameters and the FLOPs of one forward pass of ``model`` at ``input_size``.

    The forward pass runs in eval mode without gradients (the model's mode is restored), on the
    device and dtype of the model's first parameter, so a model built on the ``meta`` device is
    profiled without allocating memory or computing anything.

    Args:
        model: the network.
        input_size: shape of the input batch, e.g. ``(1, 3, 224, 224)``.

    Returns:
        A :class:`ModelProfile`.

    Example:
        >>> from ecanet.models.resnet import eca_resnet18
        >>> profile = profile_model(eca_resnet18(width=8, num_classes=10), (1, 3, 32, 32))
        >>> profile.attention_params, profile.macs
        (44, 842368)
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    size = tuple(input_size)
    if not size or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in size):
        raise ValueError(f"input_size must be a sequence of positive ints such as (1, 3, 224, 224), got {input_size!r}")
    first = next(model.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    dtype = first.dtype if first is not None and first.is_floating_point() else torch.float32
    attention_types = tuple(ATTENTION_LAYERS.values())
    attention_params = sum(
        p.numel() for module in model.modules() if isinstance(module, attention_types) for p in module.parameters()
    )
    counter = FlopCounterMode(display=False)
    with evaluation_mode(model), torch.no_grad(), counter:
        model(torch.zeros(size, device=device, dtype=dtype))
    flops = counter.get_total_flops()
    return ModelProfile(
        params=sum(p.numel() for p in model.parameters()),
        attention_params=attention_params,
        flops=flops,
        macs=flops // 2,
        input_size=size,
    )


def profile_registered_model(name: str, input_size: Sequence[int] = (1, 3, 224, 224), **kwargs: Any) -> ModelProfile:
    """Profiles the registered model ``name`` built on the ``meta`` device (instant, no memory).

    Args:
        name: a name from :func:`ecanet.models.registry.list_models`.
        input_size: input shape; its channel count is passed as ``in_chans``.
        **kwargs: passed to the builder (e.g. ``num_classes``, ``width``).

    Example:
        >>> profile = profile_registered_model("eca_resnet50")
        >>> round(profile.params_paper_units, 2), profile.attention_params
        (24.37, 80)
    """
    if len(input_size) < 2:
        raise ValueError(f"input_size must be (N, C, H, W)-like, got {input_size!r}")
    with torch.device("meta"):
        model = create_model(name, in_chans=input_size[1], **kwargs)
    return profile_model(model, input_size)
