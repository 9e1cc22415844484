import pytest

from ecanet.training.sampler import EpochSampler


def batches(sampler: EpochSampler, batch_size: int) -> list[list[int]]:
    order = list(sampler)
    return [order[start : start + batch_size] for start in range(0, len(order) - batch_size + 1, batch_size)]


@pytest.mark.parametrize(("size", "world_size", "global_batch"), [(100, 2, 8), (103, 4, 12), (64, 2, 2)])
def test_processes_together_see_the_single_process_batches(size: int, world_size: int, global_batch: int) -> None:
    single = EpochSampler(range(size), rank=0, world_size=1, seed=7)
    single.set_epoch(3)
    shards = []
    for rank in range(world_size):
        sampler = EpochSampler(range(size), rank=rank, world_size=world_size, seed=7)
        sampler.set_epoch(3)
        shards.append(batches(sampler, global_batch // world_size))
    for index, expected in enumerate(batches(single, global_batch)):
        union = sorted(sample for shard in shards for sample in shard[index])
        assert union == sorted(expected)


def test_epochs_reshuffle_and_skip_drops_the_first_samples() -> None:
    sampler = EpochSampler(range(50), rank=0, world_size=1, seed=0)
    sampler.set_epoch(0)
    first = list(sampler)
    sampler.set_epoch(1)
    second = list(sampler)
    assert sorted(first) == sorted(second) == list(range(50)) and first != second
    sampler.set_epoch(1, skip=20)
    assert list(sampler) == second[20:] and len(sampler) == 30
