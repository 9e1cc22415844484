"""A context in which ECA's fused calls keep their input, so that their backward can be differentiated again."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

__all__ = ["inputs_kept", "twice_differentiable"]

_STATE = threading.local()


def inputs_kept() -> bool:
    """Whether the calling thread is inside :func:`twice_differentiable`.

    Example:
        >>> inputs_kept()
        False
        >>> with twice_differentiable():
        ...     inputs_kept()
        True
    """
    return getattr(_STATE, "kept", False)


@contextlib.contextmanager
def twice_differentiable() -> Iterator[None]:
    """Within it, ECA calls that record an autograd graph write their result to a new tensor
    instead of over their input, so that their backward can be differentiated again (gradient
    penalties such as WGAN-GP's or R1, meta-learning).

    An in-place call while training (``ECA(inplace=True)``, and the block tails of ecanet's ResNets
    and MobileNetV2 in float32 and float64) saves its output instead of its input, one tensor
    fewer per call; its first derivative is exact, but a second one raises. Inside this context
    such calls keep the input (one more tensor per call) and their second derivatives are those of
    the plain operators. The forward must run inside it. Calls that record no graph (inference)
    stay in place. The setting is per thread, as grad mode is.

    Example:
        >>> import torch, ecanet
        >>> x = torch.randn(2, 8, 4, 4, requires_grad=True)
        >>> with ecanet.twice_differentiable():
        ...     out = ecanet.ECA(8, inplace=True)(x * 1)
        >>> (grad_x,) = torch.autograd.grad(out.square().sum(), x, create_graph=True)
        >>> grad_x.square().sum().backward()  # a second derivative, into x.grad
        >>> x.grad.shape
        torch.Size([2, 8, 4, 4])
    """
    previous = inputs_kept()
    _STATE.kept = True
    try:
        yield
    finally:
        _STATE.kept = previous
