"""Building a model to retrofit from a name: ``torchvision:NAME``, ``timm:NAME`` or ``ecanet:NAME``.

Always randomly initialised (``weights=None`` / ``pretrained=False``): nothing is downloaded.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from torch import nn

__all__ = ["SOURCES", "build_named_model"]

SOURCES = ("torchvision", "timm", "ecanet")


def _import(source: str) -> Any:
    try:
        return importlib.import_module(source if source != "torchvision" else "torchvision.models")
    except ImportError as error:
        raise ValueError(f"{source} is not installed; install it to build {source} models") from error


def _names(source: str) -> list[str]:
    return list(_import("ecanet.models" if source == "ecanet" else source).list_models())


def build_named_model(spec: str, **kwargs: Any) -> nn.Module:
    """The model ``spec`` names, randomly initialised (never downloads weights).

    Args:
        spec: ``"torchvision:resnet50"``, ``"timm:efficientnet_b0"``, ``"ecanet:resnet18"``, or a
            bare name, looked up in torchvision, then timm, then ecanet.
        **kwargs: passed to the builder (e.g. ``num_classes``).

    Raises:
        ValueError: for an unknown source or name.

    Example:
        >>> type(build_named_model("torchvision:resnet18", num_classes=10)).__name__
        'ResNet'
    """
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"model name must be a non-empty string such as 'torchvision:resnet50', got {spec!r}")
    source, _, name = spec.rpartition(":")
    if source and source not in SOURCES:
        raise ValueError(f"unknown model source {source!r} in {spec!r}; use one of {list(SOURCES)}")
    for candidate in (source,) if source else SOURCES:
        if name not in _names(candidate):
            continue
        if candidate == "torchvision":
            builder = _import(candidate).get_model_builder(name)
            if "weights_backbone" in inspect.signature(builder).parameters:  # detection, segmentation
                kwargs = {"weights_backbone": None, **kwargs}
            return builder(weights=None, **kwargs)
        if candidate == "timm":
            return _import(candidate).create_model(name, pretrained=False, **kwargs)
        return _import("ecanet.models").create_model(name, **kwargs)
    searched = [source] if source else list(SOURCES)
    raise ValueError(f"unknown model {name!r}: not in the list_models() of {', '.join(searched)}")
