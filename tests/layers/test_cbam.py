import itertools

import pytest
import torch

from ecanet import CBAM

SPATIAL = {1: (9,), 2: (6, 5), 3: (3, 4, 5)}


def _mlp(descriptor, w1, w2):
    hidden = torch.stack([(descriptor * w1[j]).sum(dim=1) for j in range(w1.shape[0])], dim=1).clamp(min=0)
    return torch.stack([(hidden * w2[i]).sum(dim=1) for i in range(w2.shape[0])], dim=1)


def cbam_reference(x, fc1_weight, fc2_weight, spatial_weight, spatial_bias, channel_dim=1):
    """CBAM in float64: explicit MLP sums and a convolution written as a loop over kernel offsets."""
    x64 = x.double()
    if channel_dim == -1:
        x64 = x64.movedim(-1, 1)
    n, c = x64.shape[:2]
    flat = x64.reshape(n, c, -1)
    w1, w2 = fc1_weight.double(), fc2_weight.double()
    logits = _mlp(flat.mean(dim=2), w1, w2) + _mlp(flat.max(dim=2).values, w1, w2)
    x64 = x64 * (1.0 / (1.0 + torch.exp(-logits))).reshape(n, c, *([1] * (x64.dim() - 2)))
    maps = torch.stack([x64.mean(dim=1), x64.max(dim=1).values], dim=1)  # (N, 2, *spatial)
    spatial = maps.shape[2:]
    k = spatial_weight.shape[-1]
    half = k // 2
    padded = torch.zeros(n, 2, *[s + 2 * half for s in spatial], dtype=torch.float64)
    padded[(slice(None), slice(None), *[slice(half, half + s) for s in spatial])] = maps
    response = spatial_bias.double().reshape(1, *([1] * len(spatial))).expand(n, *spatial)
    weight = spatial_weight.double()[0]  # (2, k, ..., k)
    for offset in itertools.product(range(k), repeat=len(spatial)):
        window = padded[(slice(None), slice(None), *[slice(o, o + s) for o, s in zip(offset, spatial, strict=True)])]
        for channel in range(2):
            response = response + weight[(channel, *offset)] * window[:, channel]
    out = x64 * (1.0 / (1.0 + torch.exp(-response))).unsqueeze(1)
    return out.movedim(1, -1) if channel_dim == -1 else out


def _reference(layer, x):
    return cbam_reference(
        x, layer.fc1.weight, layer.fc2.weight, layer.spatial.weight, layer.spatial.bias, layer.channel_dim
    )


@pytest.mark.parametrize("spatial_dims", [1, 2, 3])
@pytest.mark.parametrize("channel_dim", [1, -1])
@pytest.mark.parametrize("kernel_size", [1, 3, 7])
def test_forward_matches_float64_reference(spatial_dims, channel_dim, kernel_size):
    layer = CBAM(
        16,
        reduction=4,
        spatial_kernel_size=kernel_size,
        spatial_dims=spatial_dims,
        channel_dim=channel_dim,
        dtype=torch.float64,
    )
    torch.nn.init.normal_(layer.spatial.weight, std=0.5)
    shape = (2, 16, *SPATIAL[spatial_dims]) if channel_dim == 1 else (2, *SPATIAL[spatial_dims], 16)
    x = torch.randn(shape, dtype=torch.float64)
    torch.testing.assert_close(layer(x), _reference(layer, x), rtol=1e-12, atol=1e-12)


def test_gradcheck():
    layer = CBAM(4, reduction=2, spatial_kernel_size=3, dtype=torch.float64)
    x = torch.randn(2, 4, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(layer, (x,))


def test_samples_are_independent():
    layer = CBAM(16, reduction=4, dtype=torch.float64)
    x = torch.randn(3, 16, 6, 6, dtype=torch.float64)
    together = layer(x)
    for i in range(3):
        torch.testing.assert_close(together[i : i + 1], layer(x[i : i + 1]), rtol=0, atol=1e-14)


def test_state_dict_and_parameter_count():
    layer = CBAM(256)
    shapes = {key: list(value.shape) for key, value in layer.state_dict().items()}
    assert shapes == {
        "fc1.weight": [16, 256],
        "fc2.weight": [256, 16],
        "spatial.weight": [1, 2, 7, 7],
        "spatial.bias": [1],
    }
    assert sum(p.numel() for p in layer.parameters()) == 2 * 256 * 16 + 98 + 1


def test_bfloat16_keeps_dtype():
    layer = CBAM(16, reduction=4).to(torch.bfloat16)
    out = layer(torch.randn(2, 16, 5, 5, dtype=torch.bfloat16))
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()


def test_repr_and_reset():
    layer = CBAM(32, 8, spatial_kernel_size=3, spatial_dims=1, channel_dim=-1)
    assert repr(layer) == "CBAM(32, reduction=8, hidden=4, spatial_kernel_size=3, spatial_dims=1, channel_dim=-1)"
    before = layer.spatial.weight.clone()
    layer.reset_parameters()
    assert not torch.equal(before, layer.spatial.weight)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"spatial_kernel_size": 4}, "spatial_kernel_size must be a positive odd int"),
        ({"spatial_kernel_size": 0}, "spatial_kernel_size must be a positive odd int"),
        ({"spatial_dims": 4}, "spatial_dims must be 1, 2 or 3"),
        ({"channel_dim": 0}, "channel_dim must be 1"),
        ({"reduction": -1}, "reduction must be a positive int"),
    ],
)
def test_constructor_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CBAM(16, **kwargs)


def test_input_errors():
    layer = CBAM(16, 4)
    with pytest.raises(ValueError, match="built for 2 spatial dims"):
        layer(torch.randn(2, 16, 5))
    with pytest.raises(ValueError, match="built for 16 channels but the input has 8"):
        layer(torch.randn(2, 8, 5, 5))
    with pytest.raises(TypeError, match="CBAM expects a floating-point"):
        layer(torch.ones(2, 16, 5, 5, dtype=torch.int32))


@pytest.mark.parametrize("channel_dim", [1, -1])
def test_torch_fx_traces_the_layers_as_modules(channel_dim):
    torch.manual_seed(0)
    layer = CBAM(32, reduction=4, channel_dim=channel_dim).double()
    traced = torch.fx.symbolic_trace(layer)
    assert [node.target for node in traced.graph.nodes if node.op == "call_module"] == ["fc1", "fc2"] * 2 + ["spatial"]
    x = torch.randn(2, 32, 6, 5, dtype=torch.float64)
    x = x.movedim(1, -1) if channel_dim == -1 else x
    torch.testing.assert_close(traced(x), _reference(layer, x))
    with pytest.raises(ValueError, match="expects 4-dim inputs"):
        traced(x[0])
    with pytest.raises(ValueError, match="CBAM was built for 32 channels but the input has 16"):
        traced(x[:, :16] if channel_dim == 1 else x[..., :16])


@pytest.mark.parametrize("channel_dim", [1, -1])
def test_torchscript_matches_the_reference_and_keeps_the_checks(channel_dim):
    layer = CBAM(16, reduction=4, spatial_kernel_size=3, channel_dim=channel_dim, dtype=torch.float64)
    scripted = torch.jit.script(layer)
    x = torch.randn(2, 16, 5, 4, dtype=torch.float64)
    x = x.movedim(1, -1) if channel_dim == -1 else x
    torch.testing.assert_close(scripted(x), _reference(layer, x), rtol=1e-12, atol=1e-12)
    with pytest.raises(torch.jit.Error, match="expects 4-dim inputs"):
        scripted(x[0])
