import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ecanet import SE

SPATIAL = {"1d": (9,), "2d": (5, 4), "3d": (3, 4, 2)}


def se_reference(x, fc1_weight, fc2_weight, fc1_bias=None, fc2_bias=None, channel_dim=1):
    """Squeeze-and-excitation in float64 with explicit sums, written independently of ecanet."""
    x64 = x.double()
    if channel_dim == -1:
        x64 = x64.movedim(-1, 1)
    n, c = x64.shape[:2]
    descriptor = x64.reshape(n, c, -1).mean(dim=2)
    w1, w2 = fc1_weight.double(), fc2_weight.double()
    hidden = torch.stack([(descriptor * w1[j]).sum(dim=1) for j in range(w1.shape[0])], dim=1)
    if fc1_bias is not None:
        hidden = hidden + fc1_bias.double()
    hidden = hidden.clamp(min=0)
    logits = torch.stack([(hidden * w2[i]).sum(dim=1) for i in range(c)], dim=1)
    if fc2_bias is not None:
        logits = logits + fc2_bias.double()
    gate = 1.0 / (1.0 + torch.exp(-logits))
    out = x64 * gate.reshape(n, c, *([1] * (x64.dim() - 2)))
    return out.movedim(1, -1) if channel_dim == -1 else out


def _input(batch, channels, spatial, channel_dim, dtype=torch.float64):
    shape = (batch, channels, *spatial) if channel_dim == 1 else (batch, *spatial, channels)
    return torch.randn(shape, dtype=dtype)


def _reference(layer, x):
    return se_reference(
        x, layer.fc1.weight, layer.fc2.weight, layer.fc1.bias, layer.fc2.bias, channel_dim=layer.channel_dim
    )


@pytest.mark.parametrize("rank", list(SPATIAL))
@pytest.mark.parametrize("channel_dim", [1, -1])
@pytest.mark.parametrize("bias", [False, True])
def test_forward_matches_float64_reference(rank, channel_dim, bias):
    layer = SE(32, reduction=4, bias=bias, channel_dim=channel_dim, dtype=torch.float64)
    x = _input(3, 32, SPATIAL[rank], channel_dim)
    torch.testing.assert_close(layer(x), _reference(layer, x), rtol=1e-12, atol=1e-12)


def test_gradcheck():
    layer = SE(8, reduction=2, bias=True, dtype=torch.float64)
    x = torch.randn(2, 8, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(layer, (x,))


@settings(max_examples=25, deadline=None)
@given(
    batch=st.integers(1, 4),
    channels=st.integers(1, 40),
    reduction=st.integers(1, 20),
    spatial=st.lists(st.integers(1, 5), min_size=1, max_size=3),
)
def test_shapes_and_hidden_width(batch, channels, reduction, spatial):
    layer = SE(channels, reduction, dtype=torch.float64)
    assert layer.hidden_channels == max(1, channels // reduction)
    x = _input(batch, channels, spatial, 1)
    out = layer(x)
    assert out.shape == x.shape
    torch.testing.assert_close(out, _reference(layer, x), rtol=1e-10, atol=1e-12)


def test_samples_are_independent():
    layer = SE(16, reduction=4, dtype=torch.float64)
    x = torch.randn(4, 16, 7, dtype=torch.float64)
    together = layer(x)
    for i in range(4):
        torch.testing.assert_close(together[i : i + 1], layer(x[i : i + 1]), rtol=0, atol=1e-14)


@pytest.mark.parametrize(("channels", "reduction", "min_channels", "bias", "params"), [
    (256, 16, 1, False, 2 * 256 * 16),
    (256, 16, 1, True, 2 * 256 * 16 + 16 + 256),
    (16, 16, 8, False, 2 * 16 * 8),
    (24, 8, 1, False, 2 * 24 * 3),
])  # fmt: skip
def test_parameter_count(channels, reduction, min_channels, bias, params):
    layer = SE(channels, reduction, min_channels=min_channels, bias=bias)
    assert sum(p.numel() for p in layer.parameters()) == params
    assert set(layer.state_dict()) == {"fc1.weight", "fc2.weight"} | ({"fc1.bias", "fc2.bias"} if bias else set())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_keeps_dtype_and_is_close(dtype):
    layer = SE(32, reduction=4)
    x = torch.randn(2, 32, 6, 6)
    out = layer.to(dtype)(x.to(dtype))
    assert out.dtype == dtype
    expected = se_reference(x.to(dtype), layer.fc1.weight, layer.fc2.weight)
    torch.testing.assert_close(out.double(), expected, rtol=2e-2, atol=2e-2)


def test_meta_device_and_repr():
    layer = SE(64, 8, channel_dim=-1, bias=True, device="meta")
    assert layer.fc1.weight.device.type == "meta"
    assert repr(layer) == "SE(64, reduction=8, hidden=8, bias=True, channel_dim=-1)"


def test_reset_parameters_changes_weights():
    torch.manual_seed(0)
    layer = SE(32, 4)
    before = layer.fc1.weight.clone()
    layer.reset_parameters()
    assert not torch.equal(before, layer.fc1.weight)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"channels": 0}, "channels must be a positive int"),
        ({"channels": 8.0}, "channels must be a positive int"),
        ({"channels": 8, "reduction": 0}, "reduction must be a positive int"),
        ({"channels": 8, "min_channels": True}, "min_channels must be a positive int"),
        ({"channels": 8, "channel_dim": 2}, "channel_dim must be 1"),
    ],
)
def test_constructor_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SE(**kwargs)


def test_input_errors():
    layer = SE(8, 2)
    with pytest.raises(ValueError, match="built for 8 channels but the input has 6"):
        layer(torch.randn(2, 6, 4, 4))
    with pytest.raises(ValueError, match=r"SE expects a batched input .* at least one spatial"):
        layer(torch.randn(2, 8))
    with pytest.raises(TypeError, match="SE expects a floating-point"):
        layer(torch.ones(2, 8, 4, dtype=torch.long))


@pytest.mark.parametrize("channel_dim", [1, -1])
def test_torch_fx_traces_the_mlp_as_modules(channel_dim):
    # The checks branch on the input's shape, so they are one node each; the MLP stays two module
    # calls (what FX quantization rewrites). The graph checks the channel count when it runs.
    torch.manual_seed(0)
    layer = SE(32, reduction=4, channel_dim=channel_dim).double()
    traced = torch.fx.symbolic_trace(layer)
    assert [node.target for node in traced.graph.nodes if node.op == "call_module"] == ["fc1", "fc2"]
    x = _input(2, 32, (5, 4), channel_dim)
    torch.testing.assert_close(traced(x), _reference(layer, x))
    with pytest.raises(ValueError, match="SE was built for 32 channels but the input has 16"):
        traced(_input(2, 16, (5, 4), channel_dim))


@pytest.mark.parametrize("channel_dim", [1, -1])
def test_torchscript_matches_the_reference_and_keeps_the_checks(channel_dim):
    layer = SE(16, reduction=4, bias=True, channel_dim=channel_dim, dtype=torch.float64)
    scripted = torch.jit.script(layer)
    x = _input(2, 16, SPATIAL["2d"], channel_dim)
    torch.testing.assert_close(scripted(x), _reference(layer, x), rtol=1e-12, atol=1e-12)
    with pytest.raises(torch.jit.Error, match="SE was built for 16 channels but the input has 8"):
        scripted(x[:, :8] if channel_dim == 1 else x[..., :8])
