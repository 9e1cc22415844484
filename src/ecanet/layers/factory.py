"""Attention by name: the one place that maps ``"eca"``, ``"se"``, ``"cbam"`` to modules."""

from collections.abc import Callable
from typing import Any

from torch import nn

from ecanet.layers.cbam import CBAM
from ecanet.layers.eca import ECA
from ecanet.layers.se import SE

__all__ = ["ATTENTION_LAYERS", "AttentionSpec", "create_attention", "names_eca"]

ATTENTION_LAYERS: dict[str, type[nn.Module]] = {"eca": ECA, "se": SE, "cbam": CBAM}

# None / "none", a name from ATTENTION_LAYERS, or a callable taking the channel count first (timm's
# convention: a module class, a functools.partial of one, or a factory function).
AttentionSpec = str | Callable[..., nn.Module] | None


def names_eca(attention: AttentionSpec) -> bool:
    """Whether ``attention`` is the name ``"eca"`` in any case, as :func:`create_attention` reads names.

    Example:
        >>> names_eca("ECA"), names_eca("se"), names_eca(ECA)
        (True, False, False)
    """
    return isinstance(attention, str) and attention.lower() == "eca"


def create_attention(attention: AttentionSpec, channels: int, **kwargs: Any) -> nn.Module | None:
    """Builds the attention module ``attention`` for ``channels`` channels, or ``None`` for no attention.

    Args:
        attention: ``None`` or ``"none"`` (no attention), ``"eca"``, ``"se"``, ``"cbam"``, or a
            callable called as ``attention(channels, **kwargs)`` that returns an ``nn.Module``
            (or ``None``).
        channels: number of channels the module will see.
        **kwargs: passed to the module's constructor (e.g. ``kernel_size=5`` for ECA,
            ``reduction=8`` for SE).

    Returns:
        The module, or ``None``.

    Example:
        >>> create_attention("eca", 256)
        ECA(256, k=5, padding=zeros, pooling=avg, gate=sigmoid)
        >>> create_attention("se", 64, reduction=8)
        SE(64, reduction=8, hidden=8)
        >>> create_attention(None, 64) is None
        True
    """
    if attention is None:
        return None
    if isinstance(attention, str):
        name = attention.lower()
        if name == "none":
            return None
        if name not in ATTENTION_LAYERS:
            valid = ["none", *ATTENTION_LAYERS]
            raise ValueError(f"attention must be one of {valid} or a callable, got {attention!r}")
        return ATTENTION_LAYERS[name](channels, **kwargs)
    if not callable(attention):
        raise TypeError(
            f"attention must be None, a name ('eca', 'se', 'cbam') or a callable taking the channel "
            f"count first, got {type(attention).__name__}: {attention!r}"
        )
    module = attention(channels, **kwargs)
    if module is not None and not isinstance(module, nn.Module):
        raise TypeError(f"attention callable {attention!r} returned {type(module).__name__}, not an nn.Module")
    return module
