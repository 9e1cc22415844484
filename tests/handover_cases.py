"""Building blocks for the cases where a one-step C++ entry must decline (return ``None``).

A case takes the entry's keyword arguments (a dict it may change) and returns the context to call
the entry in. Used by ``tests/ops/test_eager_call.py`` and ``test_eager_pooled_projection.py``.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable

import torch
import torch.autograd.forward_ad as forward_ad
from torch.overrides import TorchFunctionMode

Args = dict[str, object]
HandOver = Callable[[Args], contextlib.AbstractContextManager]


class PlainSubclass(torch.Tensor):
    """A tensor subclass with the default ``__torch_function__``."""


class PassThroughFunctionMode(TorchFunctionMode):
    """A ``__torch_function__`` mode that changes nothing but is active."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        return func(*args, **(kwargs or {}))


def replace(**changes: Callable[[Args], object] | object) -> HandOver:
    """A case that replaces arguments (a callable gets the current arguments) and runs without a context."""

    def apply(args: Args) -> contextlib.AbstractContextManager:
        for name, change in changes.items():
            args[name] = change(args) if callable(change) else change
        return contextlib.nullcontext()

    return apply


def within(mode: Callable[[], contextlib.AbstractContextManager]) -> HandOver:
    """A case that leaves the arguments alone and calls the entry inside ``mode()``."""
    return lambda args: mode()


def dual(name: str) -> HandOver:
    """Forward-mode AD (which ``no_grad`` does not turn off): argument ``name`` carries a tangent."""

    def apply(args: Args) -> contextlib.AbstractContextManager:
        stack = contextlib.ExitStack()
        stack.enter_context(forward_ad.dual_level())
        with warnings.catch_warnings():  # torch's first make_dual scripts its decompositions (deprecated API)
            warnings.simplefilter("ignore", FutureWarning)
            args[name] = forward_ad.make_dual(args[name], torch.ones_like(args[name]))
        return stack

    return apply
