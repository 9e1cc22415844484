"""Which models a compare can train: registered ecanet models, or torchvision/timm models + add_eca.

A registered model (``"resnet18"``) takes the attention choice as a constructor argument, so all
four choices (``none``, ``eca``, ``se``, ``cbam``) are available. A foreign model
(``"torchvision:resnet18"``, ``"timm:resnet26d"``) is built untrained (never downloads weights)
and gets ECA through :func:`ecanet.add_eca`; it supports ``none`` and ``eca`` only.
"""

from __future__ import annotations

import importlib
from typing import Any

from torch import Tensor, nn

from ecanet.experiments.results import EcaLayer
from ecanet.layers.eca import ECA

__all__ = ["ATTENTIONS", "FOREIGN_SOURCES", "build_foreign_model", "eca_layers", "foreign_source", "validate_variants"]

ATTENTIONS = ("none", "eca", "se", "cbam")
FOREIGN_SOURCES = ("torchvision", "timm")
FOREIGN_ATTENTIONS = ("none", "eca")


def foreign_source(model: str) -> tuple[str, str] | None:
    """Splits ``"torchvision:NAME"`` / ``"timm:NAME"`` into ``(source, NAME)``; ``None`` for ecanet names.

    Args:
        model: a model spec as given to ``ecanet compare --model``.

    Returns:
        ``(source, name)`` for a foreign model, else ``None``.

    Example:
        >>> foreign_source("torchvision:resnet18"), foreign_source("resnet18")
        (('torchvision', 'resnet18'), None)
    """
    if ":" not in model:
        return None
    source, name = model.split(":", 1)
    if source not in FOREIGN_SOURCES or not name:
        raise ValueError(
            f"model must be an ecanet model name or one of {[s + ':NAME' for s in FOREIGN_SOURCES]}, got {model!r}"
        )
    return source, name


def validate_variants(model: str, attentions: tuple[str, ...] | list[str]) -> None:
    """Checks that every attention choice is known and possible for ``model``, before any training.

    Args:
        model: registered model name or ``torchvision:NAME`` / ``timm:NAME``.
        attentions: the attention choices to compare (at least two, no repeats).

    Example:
        >>> validate_variants("torchvision:resnet18", ["none", "se"])
        Traceback (most recent call last):
        ...
        ValueError: attention 'se' is not available for the foreign model 'torchvision:resnet18': ...
    """
    if len(attentions) < 2 or len(set(attentions)) != len(attentions):
        raise ValueError(f"attentions must list at least two different choices, got {list(attentions)}")
    for attention in attentions:
        if attention not in ATTENTIONS:
            raise ValueError(f"attention must be one of {list(ATTENTIONS)}, got {attention!r}")
    source = foreign_source(model)
    if source is None:
        from ecanet.models import list_models

        if model not in list_models():
            raise ValueError(
                f"model {model!r} is not a registered ecanet model (see `ecanet info` or ecanet.list_models()); "
                f"foreign models are written {[s + ':NAME' for s in FOREIGN_SOURCES]}"
            )
        return
    for attention in attentions:
        _check_foreign_attention(model, attention)


def _check_foreign_attention(model: str, attention: str) -> None:
    if attention not in FOREIGN_ATTENTIONS:
        raise ValueError(
            f"attention {attention!r} is not available for the foreign model {model!r}: ecanet can only "
            f"add ECA to other libraries' models (add_eca), so choose from {list(FOREIGN_ATTENTIONS)}"
        )


class _RepeatChannels(nn.Module):
    """Feeds grayscale images to a model built for RGB by repeating the single channel."""

    def __init__(self, model: nn.Module, channels: int) -> None:
        super().__init__()
        self.model = model
        self.channels = channels

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x.expand(-1, self.channels, *x.shape[2:]))


def build_foreign_model(
    model: str, attention: str, *, num_classes: int, in_chans: int, model_kwargs: dict[str, Any] | None = None
) -> nn.Module:
    """Builds an untrained torchvision or timm model, with ECA added by :func:`ecanet.add_eca` if asked.

    torchvision models expect RGB: grayscale data is fed to them with its channel repeated.

    Args:
        model: ``"torchvision:NAME"`` or ``"timm:NAME"``.
        attention: ``"none"`` or ``"eca"``.
        num_classes: size of the classifier.
        in_chans: image channels of the data.
        model_kwargs: extra keyword arguments for the library's constructor.

    Returns:
        The model, randomly initialised (seed the global RNG first for reproducible weights).

    Example:
        >>> import torch
        >>> net = build_foreign_model("torchvision:resnet18", "eca", num_classes=10, in_chans=1)
        >>> len(eca_layers(net)), net(torch.randn(2, 1, 32, 32)).shape
        (8, torch.Size([2, 10]))
    """
    source = foreign_source(model)
    if source is None:
        raise ValueError(f"model must be 'torchvision:NAME' or 'timm:NAME' here, got {model!r}")
    _check_foreign_attention(model, attention)
    library, name = source
    try:
        module = importlib.import_module(f"{library}.models" if library == "torchvision" else library)
    except ImportError as error:
        raise ImportError(f"model {model!r} needs the {library} package: pip install {library}") from error
    kwargs = dict(model_kwargs or {})
    if library == "torchvision":
        net = module.get_model(name, weights=None, num_classes=num_classes, **kwargs)
        if in_chans != 3:
            net = _RepeatChannels(net, 3)
    else:
        net = module.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_chans, **kwargs)
    if attention == "eca":
        from ecanet import add_eca

        add_eca(net)
    return net


def eca_layers(model: nn.Module) -> tuple[EcaLayer, ...]:
    """The ECA layers of ``model`` in module order, with their channel count and kernel size.

    Args:
        model: any module.

    Returns:
        One :class:`EcaLayer` per :class:`ecanet.ECA` submodule.

    Example:
        >>> eca_layers(nn.Sequential(nn.Conv2d(3, 64, 3), ECA(64)))
        (EcaLayer(name='1', channels=64, kernel_size=3),)
    """
    return tuple(
        EcaLayer(name, module.channels, module.kernel_size)
        for name, module in model.named_modules()
        if isinstance(module, ECA)
    )
