import pytest
import torch
from torch import nn

from ecanet.functional import check_eca_options, eca, eca_channel_conv, eca_descriptor, eca_gate, eca_residual
from reference import eca_reference


@pytest.mark.parametrize("k", [1, 3, 5, 9])
def test_channel_conv_equals_conv1d_with_zero_padding(k):
    conv = nn.Conv1d(1, 1, k, padding=(k - 1) // 2, bias=False).double()
    descriptor = torch.randn(4, 33, dtype=torch.float64)
    expected = conv(descriptor.unsqueeze(1)).squeeze(1)
    torch.testing.assert_close(eca_channel_conv(descriptor, conv.weight), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("k", [3, 5])
def test_channel_conv_equals_conv1d_with_circular_padding(k):
    conv = nn.Conv1d(1, 1, k, padding=(k - 1) // 2, padding_mode="circular", bias=False).double()
    descriptor = torch.randn(4, 10, dtype=torch.float64)
    expected = conv(descriptor.unsqueeze(1)).squeeze(1)
    actual = eca_channel_conv(descriptor, conv.weight, padding="circular")
    torch.testing.assert_close(actual, expected, rtol=1e-12, atol=1e-12)


def test_descriptor_avgmax_is_mean_plus_max():
    x = torch.randn(3, 5, 4, 6, dtype=torch.float64)
    expected = x.flatten(2).mean(-1) + x.flatten(2).max(-1).values
    torch.testing.assert_close(eca_descriptor(x, "avgmax"), expected)


def test_gate_is_the_ratio_of_output_to_input():
    x = torch.rand(2, 8, 3, dtype=torch.float64) + 0.5
    weight = torch.randn(1, 1, 3, dtype=torch.float64)
    gate = eca_gate(x, weight)
    torch.testing.assert_close(eca(x, weight), x * gate.unsqueeze(-1))


@pytest.mark.parametrize("activation", ["relu", "none"])
@pytest.mark.parametrize("channel_dim", [1, -1])
def test_residual_tail_matches_reference(activation, channel_dim):
    shape = (2, 12, 4, 4) if channel_dim == 1 else (2, 4, 4, 12)
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    identity = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(1, 1, 5, dtype=torch.float64, requires_grad=True)
    out = eca_residual(x, weight, identity, activation, channel_dim=channel_dim)
    expected = eca_reference(x, weight, channel_dim=channel_dim) + identity
    if activation == "relu":
        expected = expected.clamp_min(0)
    torch.testing.assert_close(out, expected)
    assert torch.autograd.gradcheck(
        lambda a, w, b: eca_residual(a, w, b, activation, channel_dim=channel_dim), (x, weight, identity)
    )


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: eca(torch.randn(2, 8, 4), torch.randn(1, 1, 4)), "kernel size must be odd"),
        (lambda: eca(torch.randn(2, 8, 4), torch.randn(3)), r"shape \[1, 1, k\]"),
        (lambda: eca(torch.randn(2, 8, 4), torch.randn(5, 1, 3)), "5 rows but the input has 8 channels"),
        (lambda: eca(torch.randn(2, 8, 4), torch.randn(1, 1, 3), channel_dim=2), "channel_dim must be 1"),
        (lambda: eca(torch.randn(2, 8, 4), torch.randn(1, 1, 3), padding="same"), "padding must be one of"),
        (lambda: eca_channel_conv(torch.randn(2, 3, 4), torch.randn(1, 1, 3)), r"shape \(N, C\)"),
        (lambda: eca_residual(torch.randn(2, 8, 4), torch.randn(1, 1, 3), torch.randn(2, 8, 5)), "identity shape"),
        (
            lambda: eca_residual(torch.randn(2, 8, 4), torch.randn(1, 1, 3), torch.randn(2, 8, 4), "gelu"),
            "activation must be one of",
        ),
        (lambda: check_eca_options(gate="tanh"), "gate must be one of"),
    ],
)
def test_errors_name_the_problem(call, message):
    with pytest.raises(ValueError, match=message):
        call()
