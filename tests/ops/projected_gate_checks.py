"""Checks of the compiled-inference operators' Triton kernels (:mod:`ecanet.ops.projected_gate`),
run by ``test_triton_kernels.py`` in a fresh process.

Not collected by a plain ``pytest`` run. With ``ECANET_TRITON_DEVICE=cpu`` (the default) the
kernels run on CPU tensors in Triton's interpreter, switched on before Triton is first imported;
with ``ECANET_TRITON_DEVICE=cuda`` (``make gpu-check``) they are compiled and run on the GPU, and
the operators themselves take them.
"""

import os

os.environ["TRITON_INTERPRET"] = "1" if os.environ.get("ECANET_TRITON_DEVICE", "cpu") == "cpu" else "0"

import pytest
import torch

from ecanet.ops import triton_kernels
from ecanet.ops.frozen_norm import FrozenNorm
from ecanet.ops.projected_gate import norm_relu_sums_in_triton, projected_gate_in_triton
from kernel_cases import DEVICE, LAYOUTS, random_tensor

_IMAGE_LAYOUTS = [name for name, (shape, _, channel_dim) in LAYOUTS.items() if len(shape) == 4 and channel_dim == 1]
_IMAGE_LAYOUTS.append("split-positions-channels-first")
_SPLIT_CHANNELS_FIRST = ((2, 3, 96, 96), torch.contiguous_format, 1)

_TOLERANCES = {torch.float32: {"rtol": 1e-5, "atol": 1e-5}, torch.bfloat16: {"rtol": 1e-2, "atol": 1e-2}}


def _layout(name):
    return _SPLIT_CHANNELS_FIRST if name == "split-positions-channels-first" else LAYOUTS[name]


def _random_norm(channels, dtype):
    """An eval-mode BatchNorm's tensors with random statistics (variances in [0.5, 2])."""
    variance = torch.rand(channels, dtype=torch.float64) * 1.5 + 0.5
    tensors = [random_tensor((channels,), dtype) for _ in range(4)]
    tensors[1] = variance.to(device=DEVICE, dtype=dtype)
    return FrozenNorm(*tensors, 1e-5)


def _normalized_reference(y, norm):
    """``norm(y)`` per channel (dim 1) in float64."""
    mean, var, weight, bias = (t.double() for t in norm[:4])
    shape = [1, -1] + [1] * (y.dim() - 2)
    scale = weight / torch.sqrt(var + norm.eps)
    return y.double() * scale.view(shape) + (bias - mean * scale).view(shape)


@pytest.mark.parametrize("layout", _IMAGE_LAYOUTS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_norm_relu_sums_match_reference(layout, dtype):
    shape, memory_format, _ = _layout(layout)
    y = random_tensor(shape, dtype, memory_format)
    norm = _random_norm(shape[1], dtype)

    out, partial = norm_relu_sums_in_triton(y, norm)

    expected = torch.relu(_normalized_reference(y, norm))
    assert out.dtype == dtype and out.stride() == y.stride()
    torch.testing.assert_close(out.double(), expected, **_TOLERANCES[dtype])
    plan = triton_kernels.reduction_plan(triton_kernels.geometry(y, 1), y.device)
    assert partial.shape == (shape[0], plan.splits, shape[1]) and partial.dtype == torch.float32
    # The sums are those of the activation as stored (rounded to its dtype).
    torch.testing.assert_close(partial.double().sum(1), out.double().sum((2, 3)), rtol=1e-5, atol=1e-4)


def test_split_layouts_split_the_activations_sums():
    # The checks above cover partial sums in several parts only if some layout does split.
    for name in ("split-positions-channels-last", "split-positions-channels-first"):
        shape, memory_format, _ = _layout(name)
        y = random_tensor(shape, torch.float32, memory_format)
        assert norm_relu_sums_in_triton(y, _random_norm(shape[1], torch.float32))[1].shape[1] > 1, name


def _gate_reference(partial, positions, conv_weight, taps, norm):
    """ECA's gate through the 1x1 convolution and the norm, in float64, with explicit taps."""
    pooled = partial.double().sum(1) / positions
    projected = pooled @ conv_weight.double().reshape(conv_weight.shape[0], -1).T
    normalized = _normalized_reference(projected, norm)
    channels, k = normalized.shape[1], taps.shape[-1]
    logits = torch.zeros_like(normalized)
    for j, tap in enumerate(taps.double().reshape(k).tolist()):
        for c in range(channels):
            source = c + j - k // 2
            if 0 <= source < channels:
                logits[:, c] += tap * normalized[:, source]
    return torch.sigmoid(logits)


@pytest.mark.parametrize(
    ("samples", "splits", "c_in", "c_out"),
    [(1, 1, 5, 20), (3, 2, 70, 100), (70, 3, 64, 96), (17, 1, 130, 33)],
    ids=["one-sample", "tile-edges", "sample-blocks", "input-blocks"],
)
@pytest.mark.parametrize("k", [1, 3, 5, 9])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("weight_format", [torch.contiguous_format, torch.channels_last])
def test_projected_gate_matches_reference(samples, splits, c_in, c_out, k, dtype, weight_format):
    positions = 49
    partial = random_tensor((samples, splits, c_in), torch.float32).abs() * positions
    conv_weight = (random_tensor((c_out, c_in, 1, 1), dtype) / c_in**0.5).to(memory_format=weight_format)
    taps = random_tensor((1, 1, k), dtype)
    norm = _random_norm(c_out, dtype)

    gate = projected_gate_in_triton(partial, positions, conv_weight, taps, norm)

    assert gate.shape == (samples, c_out) and gate.dtype == torch.float32
    expected = _gate_reference(partial, positions, conv_weight, taps, norm)
    torch.testing.assert_close(gate.double(), expected, rtol=1e-5, atol=1e-5)


def test_the_operator_agrees_with_its_triton_kernel():
    y = random_tensor((2, 8, 5, 5), torch.float32, torch.channels_last)
    norm = _random_norm(8, torch.float32)
    out, partial = torch.ops.ecanet.norm_relu_sums(y, *norm)
    expected_out, expected_partial = norm_relu_sums_in_triton(y, norm)
    torch.testing.assert_close(out, expected_out)
    torch.testing.assert_close(partial.sum(1), expected_partial.sum(1), rtol=1e-5, atol=1e-5)
    if DEVICE == "cuda":
        # On a GPU the operator runs the same kernel with the same split: bit for bit.
        assert torch.equal(partial, expected_partial)
