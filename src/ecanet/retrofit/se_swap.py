"""Finding the squeeze-and-excitation modules that ``replace_se=True`` swaps for ECA."""

from __future__ import annotations

from torch import nn

from ecanet.retrofit.places import Candidate, SkippedPlace, walk
from ecanet.retrofit.recognize import attention_kind, se_output
from ecanet.retrofit.wrappers import ECAInsteadOf

__all__ = ["STRATEGY", "find_se_places"]

STRATEGY = "SE swap"


def find_se_places(model: nn.Module) -> tuple[list[Candidate], list[SkippedPlace]]:
    """Every SE module (torchvision, timm, ecanet) in ``model``, as a ``"replace_se"`` candidate.

    Args:
        model: the model to search.

    Returns:
        ``(candidates, skipped)``; skipped are the SE modules an earlier call already swapped.

    Example:
        >>> from ecanet.layers.se import SE
        >>> [(c.name, c.channels) for c in find_se_places(nn.Sequential(nn.Conv2d(3, 64, 1), SE(64)))[0]]
        [('1', 64)]
    """
    places: list[Candidate] = []
    skipped: list[SkippedPlace] = []

    def visit(name: str, module: nn.Module) -> bool:
        if isinstance(module, ECAInsteadOf):
            skipped.append(SkippedPlace(name, "SE already swapped for ECA"))
            return False
        if attention_kind(module) == "se":
            channels, channel_dim = se_output(module)
            places.append(Candidate(name, "replace_se", STRATEGY, type(module).__name__, channels, channel_dim))
            return False
        return True

    walk(model, visit)
    return places, skipped
