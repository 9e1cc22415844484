"""The training sampler: DistributedSampler's per-epoch shuffling, able to start mid-epoch."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

from torch.utils.data import Dataset, DistributedSampler, Sampler

__all__ = ["EpochSampler"]


class EpochSampler(Sampler[int]):
    """Shuffles with ``DistributedSampler`` (seeded by ``seed + epoch``, sharded by rank) and can skip
    the samples a resumed run has already trained on.

    With ``world_size`` processes and a global batch B split as B/``world_size`` per process, the
    union of the processes' i-th batches equals the i-th batch of a single process with batch B:
    a distributed run sees exactly the batches a single-process run sees.

    Args:
        dataset: the training set.
        rank: this process's rank.
        world_size: number of processes.
        seed: shuffling seed.

    Example:
        >>> sampler = EpochSampler(list(range(8)), rank=0, world_size=1, seed=0)
        >>> sampler.set_epoch(1, skip=6)
        >>> len(sampler), len(list(sampler))
        (2, 2)
    """

    def __init__(self, dataset: Dataset, *, rank: int, world_size: int, seed: int) -> None:
        self.shuffler = DistributedSampler(
            dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed, drop_last=True
        )
        self.skip = 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        """Selects the order of ``epoch`` and drops its first ``skip`` samples (of this process)."""
        self.shuffler.set_epoch(epoch)
        self.skip = skip

    def __iter__(self) -> Iterator[int]:
        return itertools.islice(iter(self.shuffler), self.skip, None)

    def __len__(self) -> int:
        return max(0, len(self.shuffler) - self.skip)
