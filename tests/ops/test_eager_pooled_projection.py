"""The one-step C++ descriptor of a bottleneck at inference, :func:`ecanet.ops.dispatch.eager_pooled_projection`.

Its results against float64 arithmetic over dtypes, layouts and optional parameters; every case
where it must hand over to the Python path (returning ``None``); and its use by
:func:`ecanet.models.pooling.pooled_through_projection`.
"""

from __future__ import annotations

import contextlib

import pytest
import torch
from torch import Tensor, nn
from torch.profiler import ProfilerActivity, profile

from ecanet.models.pooling import pooled_through_projection
from ecanet.ops import cpu_kernels
from ecanet.ops.dispatch import eager_pooled_projection
from handover_cases import HandOver, PassThroughFunctionMode, PlainSubclass, dual, replace, within
from operator_log import OperatorLog

IN_CHANNELS, OUT_CHANNELS = 6, 16
# Relative to the largest expected value; the result is float32 for every input but float64.
TOLERANCES = {torch.float64: 1e-12, torch.float32: 1e-5, torch.bfloat16: 1e-5, torch.float16: 1e-5}


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _arguments(dtype: torch.dtype = torch.float32, bias: bool = True, affine: bool = True, seed: int = 0) -> dict:
    """A valid call: a 1x1 convolution's parameters and BatchNorm statistics far from the defaults."""
    generator = _generator(seed)

    def randn(*shape: int) -> Tensor:
        return torch.randn(*shape, generator=generator).to(dtype)

    return {
        "z": randn(3, IN_CHANNELS, 5, 7) + 0.5,
        "weight": randn(OUT_CHANNELS, IN_CHANNELS, 1, 1),
        "bias": randn(OUT_CHANNELS) if bias else None,
        "running_mean": randn(OUT_CHANNELS),
        "running_var": (torch.rand(OUT_CHANNELS, generator=generator) * 3 + 0.1).to(dtype),
        "norm_weight": randn(OUT_CHANNELS) if affine else None,
        "norm_bias": randn(OUT_CHANNELS) if affine else None,
        "eps": 1e-3,
    }


def _float64_expectation(args: dict) -> Tensor:
    """``bn(conv(z))`` pooled afterwards, every step in float64."""
    double = {name: value.double() if isinstance(value, Tensor) else value for name, value in args.items()}
    y = torch.nn.functional.conv2d(double["z"], double["weight"], double["bias"])
    y = torch.nn.functional.batch_norm(
        y, double["running_mean"], double["running_var"], double["norm_weight"], double["norm_bias"], eps=args["eps"]
    )
    return y.mean((2, 3))


def test_the_extension_serves_it():
    assert cpu_kernels.available() and cpu_kernels.entry("pooled_projection") is not None


@pytest.mark.parametrize("dtype", list(TOLERANCES))
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("affine", [True, False])
def test_equals_pooling_after_convolution_and_batchnorm_in_float64(dtype, memory_format, bias, affine):
    args = _arguments(dtype, bias, affine, seed=hash((str(dtype), bias, affine)) % 1000)
    args["z"] = args["z"].contiguous(memory_format=memory_format)
    with torch.inference_mode():
        pooled = eager_pooled_projection(**args)
    expected = _float64_expectation(args)
    assert pooled is not None and pooled.shape == (3, OUT_CHANNELS)
    assert pooled.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    scale = expected.abs().max().item()
    torch.testing.assert_close(pooled.double(), expected, rtol=0, atol=TOLERANCES[dtype] * scale)


NONE_CASES: dict[str, HandOver] = {
    "z-requires-grad": replace(z=lambda a: a["z"].requires_grad_()),
    "weight-requires-grad": replace(weight=lambda a: a["weight"].requires_grad_()),
    "norm-weight-requires-grad": replace(norm_weight=lambda a: a["norm_weight"].requires_grad_()),
    "forward-ad-dual-z": dual("z"),
    "operator-log-dispatch-mode": within(OperatorLog),
    "torch-function-mode": within(PassThroughFunctionMode),
    "subclass-z": replace(z=lambda a: a["z"].as_subclass(PlainSubclass)),
    "subclass-running-var": replace(running_var=lambda a: a["running_var"].as_subclass(PlainSubclass)),
    "meta-z": replace(z=lambda a: a["z"].to("meta")),
    "integer-z": replace(z=lambda a: a["z"].to(torch.int32)),
    "z-rank-3": replace(z=lambda a: a["z"].flatten(2)),
    "strided-z": replace(z=lambda a: torch.randn(3, IN_CHANNELS, 5, 14)[..., ::2]),
    "channel-slice-z": replace(z=lambda a: torch.randn(3, IN_CHANNELS + 2, 5, 7)[:, :IN_CHANNELS]),
    "empty-z": replace(z=lambda a: torch.randn(0, IN_CHANNELS, 5, 7)),
    "weight-rank-0": replace(weight=lambda a: torch.tensor(1.0)),
    "weight-rank-2": replace(weight=lambda a: a["weight"].flatten(1)),
    "weight-for-other-inputs": replace(weight=lambda a: torch.randn(OUT_CHANNELS, IN_CHANNELS + 1, 1, 1)),
    "bias-size": replace(bias=lambda a: torch.randn(OUT_CHANNELS + 1)),
    "running-mean-size": replace(running_mean=lambda a: torch.randn(OUT_CHANNELS - 1)),
    "norm-bias-size": replace(norm_bias=lambda a: torch.randn(2 * OUT_CHANNELS)),
}


@pytest.mark.parametrize("case", list(NONE_CASES))
def test_hands_over_to_python_where_it_must(case):
    args = _arguments()
    with torch.no_grad():
        assert eager_pooled_projection(**args) is not None  # the unchanged call is served
    grad_mode = contextlib.nullcontext() if case.endswith("requires-grad") else torch.no_grad()
    with grad_mode, NONE_CASES[case](args):
        assert eager_pooled_projection(**args) is None


def test_under_no_grad_parameters_that_require_grad_are_fine():
    """Models' parameters require grad; at inference (no_grad) nothing is recorded, so the entry serves them."""
    args = _arguments()
    args["weight"].requires_grad_()
    with torch.no_grad():
        assert eager_pooled_projection(**args) is not None


def test_pooled_through_projection_takes_it_and_the_python_path_agrees():
    conv, norm = nn.Conv2d(IN_CHANNELS, OUT_CHANNELS, 1), nn.BatchNorm2d(OUT_CHANNELS).eval()
    args = _arguments()
    with torch.no_grad():
        conv.weight.copy_(args["weight"])
        conv.bias.copy_(args["bias"])
        norm.running_mean.copy_(args["running_mean"])
        norm.running_var.copy_(args["running_var"])
        norm.weight.copy_(args["norm_weight"])
        norm.bias.copy_(args["norm_bias"])
    norm.eps = args["eps"]
    z = args["z"]
    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU]) as trace:
        served = pooled_through_projection(z, conv, norm)
    with torch.no_grad(), OperatorLog():  # a dispatch mode: the entry steps aside, Python composes it
        composed = pooled_through_projection(z, conv, norm)
    names = {event.key for event in trace.key_averages()}
    assert "aten::addmm" in names and "aten::linear" not in names  # the C++ step's product, not F.linear
    torch.testing.assert_close(served, composed, rtol=1e-5, atol=1e-5)
