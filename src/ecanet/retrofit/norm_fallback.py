"""Placement when no residual branch can be found: after every wide enough feature-map normalization.

Used for plain (VGG-style) networks and for models torch.fx cannot trace. Following every
normalization is the closest analogue of the paper's rule (ECA after the normalization that ends
a convolution stage) when the model's structure is unknown; the ``min_channels`` threshold, applied
later, keeps it off the narrow early layers.
"""

from __future__ import annotations

from torch import nn

from ecanet.retrofit.places import Candidate, SkippedPlace, walk
from ecanet.retrofit.recognize import attention_kind, feature_map_norm, norm_output
from ecanet.retrofit.wrappers import ECAAfter

__all__ = ["STRATEGY", "find_norm_places"]

STRATEGY = "norm fallback"


def find_norm_places(model: nn.Module) -> tuple[list[Candidate], list[SkippedPlace]]:
    """Places after every feature-map normalization layer outside attention modules.

    Args:
        model: the model to search.

    Returns:
        ``(candidates, skipped)``; skipped are the normalizations that already have ECA.

    Example:
        >>> plain = nn.Sequential(nn.Conv2d(3, 32, 3), nn.BatchNorm2d(32), nn.ReLU(), nn.Flatten())
        >>> [(c.name, c.channels) for c in find_norm_places(plain)[0]]
        [('1', 32)]
    """
    places: list[Candidate] = []
    skipped: list[SkippedPlace] = []

    def visit(name: str, module: nn.Module) -> bool:
        if isinstance(module, ECAAfter):
            if feature_map_norm(module.module):
                skipped.append(SkippedPlace(name, "already has ECA"))
            return False
        if attention_kind(module) is not None:
            return False
        if feature_map_norm(module):
            channels, channel_dim = norm_output(module)  # type: ignore[misc]
            places.append(Candidate(name, "insert", STRATEGY, type(module).__name__, channels, channel_dim))
            return False
        return True

    walk(model, visit)
    return places, skipped
