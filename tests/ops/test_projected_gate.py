"""The compiled-inference operators on CPU tensors: against float64 references, through
``torch.library.opcheck`` (schema, fake tensors, dispatch) and under ``torch.compile``.

Their Triton kernels are checked in ``projected_gate_checks.py`` (interpreter here, compiled on a GPU).
"""

import pytest
import torch

from ecanet.ops.frozen_norm import FrozenNorm
from ecanet.ops.projected_gate import norm_relu_sums_in_triton
from reference import eca_reference


def _random_norm(channels, dtype=torch.float32):
    norm = torch.nn.BatchNorm2d(channels).eval()
    with torch.no_grad():
        norm.running_mean.normal_()
        norm.running_var.uniform_(0.5, 2.0)
        norm.weight.normal_()
        norm.bias.normal_()
    return norm.to(dtype)


def _detached(norm):
    return [t.detach() if isinstance(t, torch.Tensor) else t for t in FrozenNorm.of(norm)]


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_norm_relu_sums_is_the_activation_and_its_sums(memory_format, dtype):
    norm = _random_norm(6, dtype)
    y = torch.randn(3, 6, 5, 7, dtype=torch.float64).to(dtype=dtype, memory_format=memory_format)

    out, partial = torch.ops.ecanet.norm_relu_sums(y, *_detached(norm))

    expected = torch.relu(norm.double()(y.double()))
    tolerance = {"rtol": 1e-2, "atol": 1e-2} if dtype == torch.bfloat16 else {"rtol": 1e-6, "atol": 1e-6}
    torch.testing.assert_close(out.double(), expected, **tolerance)
    assert out.dtype == dtype and out.stride() == y.stride()
    assert partial.shape == (3, 1, 6) and partial.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    torch.testing.assert_close(partial.double()[:, 0], out.double().sum((2, 3)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("k", [1, 3, 7])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_projected_gate_is_ecas_gate_through_the_convolution_and_norm(k, dtype):
    conv = torch.nn.Conv2d(5, 24, 1, bias=False).to(dtype)
    norm = _random_norm(24, dtype)
    taps = torch.randn(1, 1, k, dtype=dtype)
    z = torch.relu(torch.randn(2, 5, 4, 6, dtype=dtype))
    partial = torch.stack([z[:, :, :2].sum((2, 3)), z[:, :, 2:].sum((2, 3))], dim=1)  # two parts

    gate = torch.ops.ecanet.projected_gate(partial, 24, conv.weight.detach(), taps, *_detached(norm))

    # The reference: ECA's gate applied to norm(conv(z)) is that output times the gate.
    y = norm.double()(conv.double()(z.double()))
    attended = eca_reference(y, taps.double())
    expected = attended[:, :, 0, 0] / y[:, :, 0, 0]
    torch.testing.assert_close(gate.double(), expected, rtol=1e-6, atol=1e-6)


def _operator_arguments():
    norm, norm3 = _random_norm(4), _random_norm(16)
    y = torch.randn(2, 4, 3, 3).to(memory_format=torch.channels_last)
    partial = torch.rand(2, 3, 4)
    conv_weight = torch.randn(16, 4, 1, 1)
    return {
        "norm_relu_sums": (y, *_detached(norm)),
        "projected_gate": (partial, 9, conv_weight, torch.randn(1, 1, 3), *_detached(norm3)),
    }


@pytest.mark.parametrize("name", ["norm_relu_sums", "projected_gate"])
def test_operators_pass_opcheck(name):
    torch.library.opcheck(getattr(torch.ops.ecanet, name).default, _operator_arguments()[name])


def test_operators_compile_to_the_eager_result():
    arguments = _operator_arguments()

    def both(y, mean, var, weight, bias, eps, conv_weight, taps):
        out, partial = torch.ops.ecanet.norm_relu_sums(y, mean, var, weight, bias, eps)
        gate = torch.ops.ecanet.projected_gate(partial, 9, conv_weight, taps, mean, var, weight, bias, eps)
        return out * 2, gate + 1

    y, *norm = arguments["norm_relu_sums"]
    conv_weight = torch.randn(4, 4, 1, 1)
    taps = torch.randn(1, 1, 3)
    expected = both(y, *norm, conv_weight, taps)
    compiled = torch.compile(both, fullgraph=True)(y, *norm, conv_weight, taps)
    for got, want in zip(compiled, expected, strict=True):
        torch.testing.assert_close(got, want)


def test_the_triton_path_names_an_input_without_a_channel_view():
    y = torch.randn(2, 4, 6, 6)[:, :, ::2]
    with pytest.raises(RuntimeError, match=r"no \(N, C, S\) view"):
        norm_relu_sums_in_triton(y, FrozenNorm.of(_random_norm(4)))


def test_the_cpu_kernel_rounds_like_the_plain_batchnorm():
    # The activation is what bn2 and the ReLU give eagerly, bit for bit, in the layer's dtype.
    norm = _random_norm(8, torch.bfloat16)
    y = torch.randn(2, 8, 5, 5, dtype=torch.bfloat16)
    out, _ = torch.ops.ecanet.norm_relu_sums(y, *_detached(norm))
    with torch.no_grad():
        assert torch.equal(out, torch.relu(norm(y)))
