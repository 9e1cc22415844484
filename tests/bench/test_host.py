import importlib.util

import pytest
import torch

from folded_norms import folded_norm_calls

pytest.importorskip("triton", reason="the host benchmark plans ECA's Triton launches")

from ecanet.bench.host import (
    HOST_BLOCK_SHAPE,
    _BottleneckWithFunctionTail,
    benchmark_host_block,
    cuda_route_without_launches,
)
from ecanet.bench.suite import bench_cases
from ecanet.models.resnet import Bottleneck
from ecanet.ops import dispatch, prepared_calls, triton_kernels, triton_launch


def _patched():
    return (
        dispatch.takes_prepared_calls,
        dispatch.kernels_for,
        triton_launch._cuda_index,
        triton_launch._one_device,
        triton_launch._stream_of,
        triton_launch._compile_and_launch,
    )


def test_the_route_is_restored_after_the_block_even_after_an_error():
    before = _patched()
    with pytest.raises(KeyError), cuda_route_without_launches():
        assert all(now is not then for now, then in zip(_patched(), before, strict=True))
        raise KeyError("inside")
    assert _patched() == before
    assert not dispatch.takes_prepared_calls(torch.zeros(1))


def test_the_eca_block_takes_the_gpus_route_with_its_batchnorm_folded(monkeypatch):
    # What the benchmark times must be what a GPU's host runs: from the second inference on, a
    # prepared call applying the block's last BatchNorm inside the rescale (launching nothing).
    folded = folded_norm_calls(monkeypatch)
    block = Bottleneck(256, 64, attention="eca").eval().to(memory_format=torch.channels_last)
    x = torch.randn(HOST_BLOCK_SHAPE).contiguous(memory_format=torch.channels_last)
    with cuda_route_without_launches(), torch.no_grad():
        for _ in range(3):
            block(x)
    assert folded == [False, True, True]


def test_launches_go_the_direct_way_up_to_the_launcher_and_leave_nothing_behind():
    # Per launch the host runs the planned launch's key and lookup as on a GPU; the stand-ins
    # for compiled kernels are gone afterwards, and so are the calls prepared on the route (their
    # bound launches hold a stand-in).
    launcher = triton_kernels._launcher("channel_affine_kernel")
    kept, prepared = dict(launcher._compiled), set(prepared_calls._prepared)
    block = Bottleneck(256, 64, attention="eca").eval().to(memory_format=torch.channels_last)
    x = torch.randn(HOST_BLOCK_SHAPE).contiguous(memory_format=torch.channels_last)
    with cuda_route_without_launches(), torch.no_grad():
        for _ in range(3):
            block(x)
        added = {key for key in launcher._compiled if key not in kept}
        assert {key[0] for key in added} == {0}  # keyed as launches on GPU 0
        assert set(prepared_calls._prepared) > prepared
    assert launcher._compiled == kept
    assert set(prepared_calls._prepared) == prepared


@pytest.mark.parametrize("mode", ["inference", "training"])
def test_rows_compare_the_eca_block_with_the_plain_one(mode):
    rows = benchmark_host_block(mode, rounds=2, warmup=1, min_round_seconds=0.0)
    candidates = ["none", "eca"] + (["function", "eca-node"] if mode == "training" else [])
    assert [(row.group, row.candidate, row.reference, row.mode) for row in rows] == [
        ("host", candidate, "none", mode) for candidate in candidates
    ]
    assert all(row.median_ms > 0 and row.rounds == 2 for row in rows)


def test_the_function_candidate_computes_the_plain_blocks_step():
    # Its tail is the plain tail inside an autograd Function: same output, same gradients.
    x, grad = torch.randn(HOST_BLOCK_SHAPE, dtype=torch.float64), torch.randn(HOST_BLOCK_SHAPE, dtype=torch.float64)
    steps = []
    for kind in (Bottleneck, _BottleneckWithFunctionTail):
        torch.manual_seed(0)
        block = kind(256, 64).double()
        source = x.clone().requires_grad_()
        out = block(source)
        out.backward(grad)
        steps.append((out.detach(), source.grad, block.conv1.weight.grad))
    for got, expected in zip(steps[1], steps[0], strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_bad_mode_and_gpu_device_are_refused():
    with pytest.raises(ValueError, match="mode must be"):
        benchmark_host_block("eval")
    with pytest.raises(ValueError, match="host group simulates"):
        bench_cases(["host"], device="cuda")
    assert [label for label, _ in bench_cases(["host"])] == [
        "host bottleneck inference channels_last float32",
        "host bottleneck training channels_last float32",
    ]
    assert not any(label.startswith("host") for label, _ in bench_cases())  # on request only


def test_without_triton_the_group_is_refused_before_anything_runs(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "triton" else real(name, *a))
    with pytest.raises(ValueError, match="needs Triton installed"):
        bench_cases(["host"])
    with pytest.raises(RuntimeError, match="needs Triton installed"), cuda_route_without_launches():
        pytest.fail("the route was entered without Triton")  # entering it must raise first
    assert not dispatch.takes_prepared_calls(torch.zeros(1))  # and nothing was left patched
