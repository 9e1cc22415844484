"""The memory-traffic floor: how fast a pass over the data can possibly be on this machine, measured.

ECA does almost no arithmetic, so its lower bound is the memory traffic: the number of full-tensor
reads and writes it cannot avoid, times the time one read-plus-write takes. That time is measured
by copying a tensor of the same size into a preallocated buffer, in the same rounds as the
candidates (so it sees the same machine load).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["copy_probe", "traffic_floor_ms"]


def copy_probe(like: Tensor) -> Callable[[], object]:
    """A zero-argument callable that copies a tensor like ``like`` into a preallocated buffer.

    One call reads and writes ``like.numel() * like.element_size()`` bytes each: two tensor passes.

    Example:
        >>> probe = copy_probe(torch.ones(4, 4))
        >>> bool(probe().eq(1).all())
        True
    """
    source = like.detach().clone()
    target = torch.empty_like(source)
    return lambda: target.copy_(source)


def traffic_floor_ms(copy_ms: float, tensor_passes: float) -> float:
    """Lower bound in ms for ``tensor_passes`` full reads or writes, given one copy took ``copy_ms``.

    A copy is two passes (one read, one write), so one pass costs ``copy_ms / 2``.

    Example:
        >>> traffic_floor_ms(10.0, 3)  # ECA inference: read (pool), read + write (rescale)
        15.0
    """
    return copy_ms * tensor_passes / 2.0
