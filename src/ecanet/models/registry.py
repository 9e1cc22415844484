"""Models by name: :func:`create_model` and :func:`list_models`."""

import difflib
import fnmatch
from collections.abc import Callable
from typing import Any

from torch import nn

from ecanet.models import mobilenetv2, resnet

__all__ = ["MODELS", "create_model", "list_models"]

# Every builder of the paper's networks, by its function name.
MODELS: dict[str, Callable[..., nn.Module]] = {
    name: getattr(module, name)
    for module in (resnet, mobilenetv2)
    for name in module.__all__
    if name.startswith(("resnet", "eca_", "se_", "cbam_", "mobilenet"))
}


def list_models(pattern: str = "*") -> list[str]:
    """The sorted names of the registered models matching an fnmatch ``pattern``.

    Args:
        pattern: shell-style pattern, e.g. ``"*eca*"`` or ``"se_resnet?0*"``.

    Example:
        >>> list_models("eca_*")
        ['eca_mobilenet_v2', 'eca_resnet101', 'eca_resnet152', 'eca_resnet18', 'eca_resnet34', 'eca_resnet50']
    """
    if not isinstance(pattern, str):
        raise TypeError(f"pattern must be a str (an fnmatch pattern such as '*eca*'), got {pattern!r}")
    return sorted(name for name in MODELS if fnmatch.fnmatchcase(name, pattern))


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Builds the registered model ``name`` (randomly initialised; nothing is downloaded).

    Args:
        name: a name from :func:`list_models`.
        **kwargs: passed to the builder: ``num_classes``, ``in_chans``, ``small_input``, ``attention``,
            and ``width``/``kernel_sizes`` (ResNets) or ``width_mult``/``kernel_sizes`` (MobileNetV2).

    Raises:
        ValueError: for an unknown name, listing the closest registered names.

    Example:
        >>> import torch
        >>> net = create_model("eca_resnet18", num_classes=10, in_chans=1, small_input=True, width=16)
        >>> net(torch.randn(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """
    if name not in MODELS:
        close = difflib.get_close_matches(str(name), list(MODELS), n=3, cutoff=0.5)
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise ValueError(f"unknown model name {name!r}{hint} (list_models() gives all {len(MODELS)} names)")
    return MODELS[name](**kwargs)
