"""Which operators reach torch's dispatcher: tells which path a call took without changing what it computes."""

from __future__ import annotations

from torch.utils._python_dispatch import TorchDispatchMode


class OperatorLog(TorchDispatchMode):
    """Runs every operator unchanged and records its name and positional arguments.

    Example:
        >>> import torch
        >>> with OperatorLog() as log:
        ...     _ = torch.ones(2) + 1
        >>> [name for name, _ in log.calls]
        ['aten.ones.default', 'aten.add.Tensor']
    """

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, tuple]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.calls.append((str(func), args))
        return func(*args, **(kwargs or {}))

    def arguments(self, name: str) -> list[tuple]:
        """The positional arguments of every call of the operator ``name`` (e.g. ``"ecanet.eca_forward.default"``)."""
        return [args for called, args in self.calls if called == name]
