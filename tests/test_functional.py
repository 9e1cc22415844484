import pytest
import torch
from torch import nn

from ecanet import ECA
from ecanet.functional import check_eca_options, eca, eca_channel_conv, eca_descriptor, eca_gate, eca_residual
from ecanet.ops import fast_mean
from operator_log import OperatorLog
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


@pytest.mark.parametrize("identity_dtype", [torch.float64, torch.bfloat16])
def test_residual_tail_dtype_is_the_sums_in_every_grad_mode(identity_dtype):
    # activation(eca(x) + identity) promotes; written in place, the sum would keep x's dtype, so
    # training and inference (and the layer with and without hooks) gave different dtypes.
    layer = ECA(8)
    x, identity = torch.randn(2, 8, 3, 3), torch.randn(2, 8, 3, 3).to(identity_dtype)
    wanted = torch.promote_types(x.dtype, identity_dtype)
    with torch.no_grad():
        inference = layer.residual(x.clone(), identity)
    training = layer.residual(x.clone(), identity)
    assert inference.dtype == training.dtype == wanted
    torch.testing.assert_close(inference, training.detach(), rtol=1e-6, atol=1e-6)


def test_residual_tail_under_autocast_has_one_dtype_for_training_and_inference():
    layer, conv = ECA(8), nn.Conv2d(8, 8, 1)
    x = torch.randn(2, 8, 5, 5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        training = layer.residual(conv(x), x)
        with torch.no_grad():
            inference = layer.residual(conv(x), x)
    assert inference.dtype == training.dtype == torch.float32


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


# The descriptor hint of the block tail, and the descriptor's own fast path.

CHANNELS = 8
TAIL_LAYOUTS = {  # shape, memory format, channel_dim
    "nchw": ((2, CHANNELS, 5, 6), torch.contiguous_format, 1),
    "channels-last": ((2, CHANNELS, 5, 6), torch.channels_last, 1),
    "tokens": ((2, 7, CHANNELS), torch.contiguous_format, -1),
}


class DescribedTail(nn.Module):
    """A residual-block tail that hands ECA its pooled descriptor, as ecanet's bottlenecks do."""

    def __init__(self, channel_dim: int) -> None:
        super().__init__()
        self.eca = ECA(CHANNELS, kernel_size=3, channel_dim=channel_dim)
        nn.init.normal_(self.eca.conv.weight)  # a gate far from 1/2, so a wrong descriptor shows

    def forward(
        self, x: torch.Tensor, identity: torch.Tensor, descriptor: torch.Tensor | None, activation: str, inplace: bool
    ) -> torch.Tensor:
        return self.eca.residual(x, identity, activation, inplace, descriptor)


@pytest.fixture(scope="module")
def tails():
    """(path, channel_dim) -> the tail eager (fast path) and under TorchScript (plain operators), same weights."""
    torch.manual_seed(0)
    modules = {}
    for channel_dim in (1, -1):
        eager = DescribedTail(channel_dim)
        modules["fast", channel_dim] = eager
        modules["script", channel_dim] = torch.jit.script(eager)
    return modules


def _tail_inputs(layout, dtype=torch.float32):
    shape, memory_format, channel_dim = TAIL_LAYOUTS[layout]
    x = torch.randn(shape, dtype=dtype).to(memory_format=memory_format)
    identity = torch.randn(shape, dtype=dtype).to(memory_format=memory_format)
    return x, identity, channel_dim


def _tail_from_descriptor(x, identity, weight, descriptor, activation, channel_dim):
    """``act(x * sigmoid(conv1d(descriptor)) + identity)`` in float64 with torch's Conv1d."""
    logits = torch.nn.functional.conv1d(descriptor.double().unsqueeze(1), weight.double(), padding=1).squeeze(1)
    gate = torch.sigmoid(logits)
    gate = gate.view(gate.shape[0], -1, *[1] * (x.dim() - 2)) if channel_dim == 1 else gate.unsqueeze(1)
    out = x.double() * gate + identity.double()
    return out.clamp_min(0) if activation == "relu" else out


@pytest.mark.parametrize("path", ["fast", "script"])
@pytest.mark.parametrize("layout", list(TAIL_LAYOUTS))
@pytest.mark.parametrize("activation", ["relu", "none"])
@pytest.mark.parametrize("inplace", [False, True])
def test_descriptor_hint_gives_the_tail_without_it(tails, path, layout, activation, inplace):
    x, identity, channel_dim = _tail_inputs(layout)
    tail = tails[path, channel_dim]
    weight = tails["fast", channel_dim].eca.conv.weight.detach()
    hinted_input, plain_input = x.clone(), x.clone()
    descriptor = eca_descriptor(x, channel_dim=channel_dim)
    with torch.no_grad(), OperatorLog() as log:
        hinted = tail(hinted_input, identity, descriptor, activation, inplace)
    with torch.no_grad():
        plain = tail(plain_input, identity, None, activation, inplace)
    torch.testing.assert_close(hinted, plain)
    # The fast path hands the hint to the compiled kernel in place of its pooling pass; TorchScript runs plain ops.
    known_means = [args[8] for args in log.arguments("ecanet.eca_forward.default")]
    assert len(known_means) == (1 if path == "fast" else 0)
    assert all(torch.equal(known_mean, descriptor) for known_mean in known_means)
    assert not log.arguments("ecanet.eca_mean.default")
    expected = eca_reference(x, weight, channel_dim=channel_dim) + identity.double()
    expected = expected.clamp_min(0) if activation == "relu" else expected
    torch.testing.assert_close(hinted.double(), expected, rtol=1e-5, atol=1e-5)
    assert hinted.stride() == x.stride()
    if inplace:
        assert hinted.data_ptr() == hinted_input.data_ptr()
    else:
        torch.testing.assert_close(hinted_input, x, rtol=0, atol=0)


@pytest.mark.parametrize("path", ["fast", "script"])
@pytest.mark.parametrize("layout", list(TAIL_LAYOUTS))
@pytest.mark.parametrize("activation", ["relu", "none"])
def test_descriptor_hint_is_what_the_gate_reads_without_a_graph(tails, path, layout, activation):
    x, identity, channel_dim = _tail_inputs(layout)
    tail = tails[path, channel_dim]
    weight = tails["fast", channel_dim].eca.conv.weight.detach()
    wrong = eca_descriptor(x, channel_dim=channel_dim) + torch.randn(2, CHANNELS)
    with torch.no_grad():
        out = tail(x.clone(), identity, wrong, activation, False)
        plain = tail(x.clone(), identity, None, activation, False)
    torch.testing.assert_close(
        out.double(), _tail_from_descriptor(x, identity, weight, wrong, activation, channel_dim), rtol=1e-5, atol=1e-5
    )
    assert not torch.allclose(out, plain, atol=1e-3)


@pytest.mark.parametrize("path", ["fast", "script"])
@pytest.mark.parametrize("layout", list(TAIL_LAYOUTS))
@pytest.mark.parametrize("inplace", [False, True])
@pytest.mark.parametrize("x_requires_grad", [True, False], ids=["x-and-weight", "weight-only"])
def test_descriptor_hint_is_ignored_while_recording_a_graph(tails, path, layout, inplace, x_requires_grad):
    x, identity, channel_dim = _tail_inputs(layout, torch.float64)
    tail = tails[path, channel_dim]
    weight = tails["fast", channel_dim].eca.conv.weight
    wrong = eca_descriptor(x, channel_dim=channel_dim) + torch.randn(2, CHANNELS, dtype=torch.float64)
    grad_output = torch.randn_like(x)
    results = []
    for descriptor in (wrong, None):
        leaf = x.clone().requires_grad_(x_requires_grad)
        out = tail(leaf * 1.0, identity, descriptor, "relu", inplace)  # an intermediate, as in a block
        weight.grad = None
        out.backward(grad_output)
        results.append((out.detach(), leaf.grad, weight.grad.clone()))
    for hinted, plain in zip(*results, strict=True):
        torch.testing.assert_close(hinted, plain, rtol=1e-12, atol=1e-12)
    expected = (eca_reference(x, weight.detach(), channel_dim=channel_dim) + identity).clamp_min(0)
    torch.testing.assert_close(results[0][0], expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "bad_shape",
    [(2, CHANNELS + 1), (CHANNELS,), (2, CHANNELS, 1), (3, CHANNELS), (1, CHANNELS)],
    ids=["channels", "one-dim", "three-dims", "batch", "batch-of-one"],
)
@pytest.mark.parametrize("grad_enabled", [False, True])
def test_descriptor_of_the_wrong_shape_names_the_expected_one(bad_shape, grad_enabled):
    x, identity = torch.randn(2, CHANNELS, 4, 4), torch.randn(2, CHANNELS, 4, 4)
    weight = torch.randn(1, 1, 3, requires_grad=True)
    with torch.set_grad_enabled(grad_enabled), pytest.raises(ValueError, match=rf"\(N, C\) = \(2, {CHANNELS}\)"):
        eca_residual(x, weight, identity, descriptor=torch.randn(bad_shape))


@pytest.mark.slow
def test_descriptor_hint_under_torch_compile():
    torch._dynamo.reset()
    tail = DescribedTail(1)
    compiled = torch.compile(
        lambda x, identity, descriptor: tail(x * 1.0, identity, descriptor, "relu", True), fullgraph=True
    )
    x, identity, _ = _tail_inputs("channels-last")
    weight = tail.eca.conv.weight.detach()
    descriptor = eca_descriptor(x)
    wrong = descriptor + torch.randn(2, CHANNELS)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x, identity, descriptor), tail(x.clone(), identity, None, "relu", True))
        out = compiled(x, identity, wrong)
    torch.testing.assert_close(
        out.double(), _tail_from_descriptor(x, identity, weight, wrong, "relu", 1), rtol=1e-5, atol=1e-5
    )


DESCRIPTOR_LAYOUTS = {  # shape, memory format, channel_dim, whether the fast path covers it
    "1d": ((3, CHANNELS, 11), torch.contiguous_format, 1, True),
    "2d": ((2, CHANNELS, 5, 7), torch.contiguous_format, 1, True),
    "2d-channels-last": ((2, CHANNELS, 5, 7), torch.channels_last, 1, True),
    "3d-channels-last": ((2, CHANNELS, 3, 2, 4), torch.channels_last_3d, 1, True),
    "tokens": ((2, 13, CHANNELS), torch.contiguous_format, -1, True),
    "empty-batch": ((0, CHANNELS, 3, 3), torch.contiguous_format, 1, True),
    "strided-slice": ((2, CHANNELS, 5, 14), None, 1, False),
}
# Half types are accumulated in float32: only the float32 sum's rounding remains.
DESCRIPTOR_TOLERANCES = {torch.float64: 1e-12, torch.float32: 1e-6, torch.bfloat16: 1e-6, torch.float16: 1e-6}


def _descriptor_input(layout, dtype):
    shape, memory_format, channel_dim, covered = DESCRIPTOR_LAYOUTS[layout]
    x = torch.randn(shape, dtype=torch.float64).add_(1.0).to(dtype)
    x = x[..., ::2] if memory_format is None else x.to(memory_format=memory_format)
    return x, channel_dim, covered


@pytest.mark.parametrize("layout", list(DESCRIPTOR_LAYOUTS))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16, torch.float16])
def test_descriptor_and_its_fast_path_equal_the_mean(layout, dtype):
    x, channel_dim, covered = _descriptor_input(layout, dtype)
    channels_first = x if channel_dim == 1 else x.movedim(-1, 1)
    expected = channels_first.double().flatten(2).mean(2)
    fast = fast_mean(x, channel_dim)
    assert (fast is not None) == covered
    expected_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    tolerance = DESCRIPTOR_TOLERANCES[dtype]
    for descriptor in (eca_descriptor(x, channel_dim=channel_dim), *([fast] if covered else [])):
        assert descriptor.shape == (x.shape[0], CHANNELS)
        assert descriptor.dtype == expected_dtype
        torch.testing.assert_close(descriptor.double(), expected, rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("layout", ["2d", "2d-channels-last", "tokens"])
def test_descriptor_stays_differentiable(layout):
    x, channel_dim, _ = _descriptor_input(layout, torch.float64)
    x.requires_grad_()
    assert fast_mean(x, channel_dim) is None  # the kernels have no derivative
    with torch.no_grad():
        assert fast_mean(x, channel_dim) is not None
    assert torch.autograd.gradcheck(lambda t: eca_descriptor(t, channel_dim=channel_dim), (x,))
    grad_output = torch.randn(x.shape[0], CHANNELS, dtype=torch.float64)
    (gradient,) = torch.autograd.grad(eca_descriptor(x, channel_dim=channel_dim), x, grad_output)
    dims = [d for d in range(1, x.dim()) if d != (1 if channel_dim == 1 else x.dim() - 1)]
    (expected,) = torch.autograd.grad(x.mean(dims), x, grad_output)
    torch.testing.assert_close(gradient, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("residual", [False, True])
def test_kernel_on_another_device_is_named(residual):
    x, weight = torch.randn(2, 8, 4, 4), torch.ones(1, 1, 3, device="meta")
    with pytest.raises(RuntimeError, match="ECA kernel is on meta but the input is on cpu"):
        if residual:
            eca_residual(x, weight, torch.randn(2, 8, 4, 4))
        else:
            eca(x, weight)
