"""Recognising the modules a retrofit cares about: normalization layers and channel attention.

Third-party classes (torchvision, timm) are looked up lazily, so ecanet works without either
package installed; a missing package simply contributes no classes.
"""

from __future__ import annotations

import functools
import importlib

from torch import nn

from ecanet.layers.cbam import CBAM
from ecanet.layers.eca import ECA
from ecanet.layers.se import SE

__all__ = ["attention_kind", "conv_output", "feature_map_norm", "norm_output", "se_output"]

# Normalization layers that only ever see feature maps (N, C, *spatial with >= 2 dims) or whose
# layout does not depend on the dimensionality. BatchNorm1d, InstanceNorm1d and LayerNorm are left
# out of this set because they also normalize plain (N, C) feature vectors, where ECA cannot go.
_FEATURE_MAP_NORMS = (nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm, nn.InstanceNorm2d, nn.InstanceNorm3d)
_CHANNELS_FIRST_NORMS = (nn.BatchNorm1d, *_FEATURE_MAP_NORMS, nn.InstanceNorm1d)


def _optional_classes(*paths: str) -> tuple[type, ...]:
    """The classes named by ``"module:Class"`` paths whose package is installed."""
    classes = []
    for path in paths:
        module_name, class_name = path.split(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        found = getattr(module, class_name, None)
        if isinstance(found, type):
            classes.append(found)
    return tuple(classes)


@functools.cache
def _frozen_batchnorm_classes() -> tuple[type, ...]:
    """BatchNorms with fixed statistics and affine (detection backbones), which keep no ``num_features``."""
    return _optional_classes("torchvision.ops.misc:FrozenBatchNorm2d", "timm.layers.norm_act:FrozenBatchNormAct2d")


@functools.cache
def _se_classes() -> tuple[type, ...]:
    return (
        SE,
        *_optional_classes(
            "torchvision.ops.misc:SqueezeExcitation",
            "timm.layers.squeeze_excite:SEModule",
            "timm.layers.squeeze_excite:EffectiveSEModule",
            "timm.models._efficientnet_blocks:SqueezeExcite",
        ),
    )


@functools.cache
def _eca_classes() -> tuple[type, ...]:
    return (ECA, *_optional_classes("timm.layers.eca:EcaModule", "timm.layers.eca:CecaModule"))


@functools.cache
def _other_attention_classes() -> tuple[type, ...]:
    return (CBAM, *_optional_classes("timm.layers.cbam:CbamModule", "timm.layers.cbam:LightCbamModule"))


def attention_kind(module: nn.Module) -> str | None:
    """``"se"``, ``"eca"`` or ``"other"`` for a known channel-attention module, else ``None``.

    Args:
        module: any module.

    Example:
        >>> from ecanet.layers.se import SE
        >>> attention_kind(SE(64)), attention_kind(ECA(64)), attention_kind(nn.ReLU())
        ('se', 'eca', None)
    """
    if isinstance(module, _se_classes()):
        return "se"
    if isinstance(module, _eca_classes()):
        return "eca"
    if isinstance(module, _other_attention_classes()):
        return "other"
    return None


def se_output(module: nn.Module) -> tuple[int, int]:
    """``(channels, channel_dim)`` of the tensor a squeeze-and-excitation module rescales.

    Read from the module's ``channels``/``channel_dim`` where it has them (ecanet's SE), else from
    its first layer: a convolution means channels first, a linear layer channels last.

    Args:
        module: a module for which :func:`attention_kind` returns ``"se"``.

    Example:
        >>> from ecanet.layers.se import SE
        >>> se_output(SE(64, channel_dim=-1))
        (64, -1)
    """
    if isinstance(module, SE):
        return module.channels, module.channel_dim
    for layer in module.modules():
        if isinstance(layer, nn.modules.conv._ConvNd):
            return layer.in_channels, 1
        if isinstance(layer, nn.Linear):
            return layer.in_features, -1
    raise ValueError(f"cannot tell the width of {type(module).__name__}: it has no convolution or linear layer")


def norm_output(module: nn.Module) -> tuple[int, int] | None:
    """``(channels, channel_dim)`` of a normalization layer's output, or ``None`` for other modules.

    ``nn.LayerNorm`` normalizes the last dim, so its output is channels last (``channel_dim=-1``);
    its ``...2d`` subclasses (torchvision's and timm's ``LayerNorm2d``) normalize channels-first
    feature maps, as torchvision's and timm's frozen BatchNorms do.

    Args:
        module: any module.

    Example:
        >>> norm_output(nn.BatchNorm2d(32)), norm_output(nn.LayerNorm(96)), norm_output(nn.ReLU())
        ((32, 1), (96, -1), None)
    """
    if isinstance(module, _CHANNELS_FIRST_NORMS):
        return module.num_features, 1
    if isinstance(module, nn.GroupNorm):
        return module.num_channels, 1
    if isinstance(module, _frozen_batchnorm_classes()):
        return module.running_mean.numel(), 1
    if isinstance(module, nn.LayerNorm) and len(module.normalized_shape) == 1:
        if type(module) is nn.LayerNorm:
            return module.normalized_shape[0], -1
        if type(module).__name__.endswith("2d"):
            return module.normalized_shape[0], 1
    return None


def feature_map_norm(module: nn.Module) -> bool:
    """Whether ``module`` is a normalization layer that only normalizes feature maps.

    These are the layers the fallback strategy may follow with ECA without knowing the input
    shape: 2-D/3-D batch and instance norms, SyncBatchNorm, frozen BatchNorms, GroupNorm and
    ``LayerNorm2d``-style layers; not BatchNorm1d or LayerNorm, which also serve plain ``(N, C)`` vectors.

    Args:
        module: any module.

    Example:
        >>> feature_map_norm(nn.BatchNorm2d(8)), feature_map_norm(nn.BatchNorm1d(8))
        (True, False)
    """
    if isinstance(module, (*_FEATURE_MAP_NORMS, nn.GroupNorm, *_frozen_batchnorm_classes())):
        return True
    output = norm_output(module)
    return isinstance(module, nn.LayerNorm) and output is not None and output[1] == 1


def conv_output(module: nn.Module) -> tuple[int, int] | None:
    """``(out_channels, 1)`` for a convolution, else ``None``.

    Args:
        module: any module.

    Example:
        >>> conv_output(nn.Conv2d(3, 16, 3)), conv_output(nn.Linear(3, 16))
        ((16, 1), None)
    """
    if isinstance(module, nn.modules.conv._ConvNd):
        return module.out_channels, 1
    return None
