"""torch's intra-op thread count, set for a block of test code and restored after it."""

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def intra_op_threads(count: int) -> Iterator[None]:
    """Runs the block with ``torch.set_num_threads(count)``, then restores the previous count.

    Example:
        >>> with intra_op_threads(1):
        ...     torch.get_num_threads()
        1
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
