import pytest
import torch

from ecanet.bench.device import GPU_ROUND_SECONDS, NETWORK_GPU_ROUND_SECONDS, bench_device, round_timing


@pytest.mark.parametrize("name", ["cpu", "cuda", "cuda:0"])
def test_bench_device_accepts_cpu_and_the_cuda_devices_present(name):
    present = name == "cpu" or torch.cuda.is_available()
    if present:
        assert bench_device(name) == torch.device(name)
    else:
        with pytest.raises(ValueError, match="has 0 usable CUDA devices"):
            bench_device(name)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("tpu", "must be 'cpu', 'cuda' or 'cuda:N', got 'tpu'"),
        ("meta", "got 'meta'"),
        ("cuda:99", "'cuda:99' asked for, but this machine has"),
    ],
)
def test_bench_device_rejects_what_cannot_run(name, message):
    with pytest.raises(ValueError, match=message):
        bench_device(name)


def test_gpu_rounds_synchronise_the_device_and_run_longer():
    timing = round_timing(torch.device("cuda", 1), cpu_round_seconds=0.1)
    assert timing["min_round_seconds"] == GPU_ROUND_SECONDS
    assert timing["synchronize"].func is torch.cuda.synchronize
    assert timing["synchronize"].args == (torch.device("cuda", 1),)
    network = round_timing(torch.device("cuda", 1), gpu_round_seconds=NETWORK_GPU_ROUND_SECONDS)
    assert network["min_round_seconds"] == NETWORK_GPU_ROUND_SECONDS > GPU_ROUND_SECONDS


def test_cpu_rounds_do_not_synchronise():
    assert round_timing(torch.device("cpu"), cpu_round_seconds=0.25) == {"min_round_seconds": 0.25}
