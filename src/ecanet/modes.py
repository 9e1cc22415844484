"""Running a model in eval mode for a while, with every module's own training flag restored after."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn

__all__ = ["evaluation_mode"]


@contextmanager
def evaluation_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Puts ``model`` in eval mode and, on exit, gives each submodule back its own training flag.

    ``model.train(was_training)`` would set every submodule to the root's flag, so a model
    training with deliberately frozen (eval-mode) BatchNorms would come back with them training.

    Args:
        model: the model.

    Example:
        >>> model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8).eval())
        >>> with evaluation_mode(model):
        ...     model.training
        False
        >>> model.training, model[1].training
        (True, False)
    """
    flags = {module: module.training for module in model.modules()}
    model.eval()
    try:
        yield model
    finally:
        for module, training in flags.items():
            module.training = training
