import pytest
import timm
import torch
import torchvision
from torch import nn

from ecanet import CBAM, ECA, SE, create_model
from ecanet.explain import attention_layers, channel_gate, gate_from_output
from reference import eca_reference


def _pooled(x, pooling, channel_dim):
    """Per-channel average (+ maximum) of x in float64, by explicit flattening."""
    x64 = x.double().movedim(channel_dim, 1) if channel_dim == -1 else x.double()
    flat = x64.reshape(x64.shape[0], x64.shape[1], -1)
    descriptor = flat.mean(2)
    return descriptor + flat.max(2).values if pooling == "avgmax" else descriptor


@pytest.mark.parametrize(
    ("shape", "options"),
    [
        ((3, 16, 5, 5), {}),
        ((2, 12, 9), {"padding": "circular", "gate": "hard_sigmoid"}),
        ((2, 10, 3, 4, 4), {"pooling": "avgmax", "shared": False}),
        ((2, 7, 20), {"channel_dim": -1, "kernel_size": 5}),
    ],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_eca_gate_is_the_pooled_convolved_squashed_descriptor(shape, options, dtype):
    torch.manual_seed(0)
    channel_dim = options.get("channel_dim", 1)
    channels = shape[channel_dim]
    layer = ECA(channels, **options)
    x = torch.randn(shape).to(dtype)
    gate_options = {key: options[key] for key in ("padding", "gate") if key in options}
    descriptor = _pooled(x, options.get("pooling", "avg"), channel_dim)
    # ECA of an all-ones input whose descriptor is x's is exactly x's gate.
    expected = eca_reference(
        torch.ones(shape[0], channels, 1), layer.conv.weight, descriptor=descriptor, **gate_options
    )
    gate = channel_gate(layer, x)
    assert gate.shape == (shape[0], channels)
    assert gate.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    tolerance = 1e-6 if dtype != torch.bfloat16 else 1e-5
    torch.testing.assert_close(gate.double(), expected[..., 0], rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("channel_dim", [1, -1])
def test_se_gate_is_what_the_layer_multiplies_by(channel_dim):
    torch.manual_seed(0)
    layer = SE(32, reduction=4, bias=True, channel_dim=channel_dim).double()
    x = torch.randn(3, 32, 6, 6, dtype=torch.float64)
    x = x.permute(0, 2, 3, 1).contiguous() if channel_dim == -1 else x
    descriptor = _pooled(x, "avg", channel_dim)
    hidden = torch.relu(descriptor @ layer.fc1.weight.T + layer.fc1.bias)
    expected = torch.sigmoid(hidden @ layer.fc2.weight.T + layer.fc2.bias)
    gate = channel_gate(layer, x)
    torch.testing.assert_close(gate, expected, rtol=1e-12, atol=1e-12)
    view = (3, 32, 1, 1) if channel_dim == 1 else (3, 1, 1, 32)
    torch.testing.assert_close(layer(x), x * gate.view(view), rtol=1e-12, atol=1e-12)


def test_cbam_gate_is_its_channel_branch():
    torch.manual_seed(0)
    layer = CBAM(32, reduction=4).double()
    with torch.no_grad():  # a spatial gate of sigmoid(40) = 1 leaves the channel branch alone
        layer.spatial.weight.zero_()
        layer.spatial.bias.fill_(40.0)
    x = torch.randn(2, 32, 7, 7, dtype=torch.float64)
    flat = x.reshape(2, 32, -1)

    def mlp(v):
        return torch.relu(v @ layer.fc1.weight.T) @ layer.fc2.weight.T

    expected = torch.sigmoid(mlp(flat.mean(2)) + mlp(flat.max(2).values))
    gate = channel_gate(layer, x)
    torch.testing.assert_close(gate, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(layer(x), x * gate[..., None, None], rtol=1e-12, atol=1e-12)


def test_other_modules_are_refused():
    with pytest.raises(TypeError, match=r"ECA, SE, CBAM.*Conv2d"):
        channel_gate(nn.Conv2d(4, 4, 1), torch.randn(1, 4, 2, 2))


@pytest.mark.parametrize(("name", "kind", "count"), [("eca_resnet18", ECA, 8), ("se_resnet50", SE, 16),
                                                     ("eca_mobilenet_v2", ECA, 17), ("resnet18", None, 0)])  # fmt: skip
def test_attention_layers_lists_every_layer_in_module_order(name, kind, count):
    model = create_model(name, width_mult=0.25) if "mobilenet" in name else create_model(name, width=8)
    found = attention_layers(model)
    assert len(found) == count
    assert all(isinstance(module, kind) for _, module in found)
    names = [name for name, _ in model.named_modules()]
    assert [names.index(layer_name) for layer_name, _ in found] == sorted(names.index(n) for n, _ in found)
    assert all(model.get_submodule(layer_name) is module for layer_name, module in found)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_gate_from_output_recovers_any_channel_rescaling(dtype):
    torch.manual_seed(0)
    x = torch.randn(3, 5, 4, 6, dtype=torch.float64)
    x[1, 2] = 0  # a channel that is zero all over one image: its gate cannot be known
    gate = torch.rand(3, 5, dtype=torch.float64)
    y = x * gate[..., None, None]
    found = gate_from_output(x.to(dtype), y.to(dtype))
    assert torch.isnan(found[1, 2]) and int(torch.isnan(found).sum()) == 1
    expected = gate.clone()
    expected[1, 2] = float("nan")
    tolerance = 1e-6 if dtype != torch.bfloat16 else 2e-2
    torch.testing.assert_close(found.double(), expected, rtol=tolerance, atol=tolerance, equal_nan=True)


def test_gate_from_output_refuses_what_is_not_a_channel_rescaling():
    x = torch.randn(2, 4, 5, 5)
    with pytest.raises(ValueError, match="not the input times one gate per channel"):
        gate_from_output(x, x + 0.1)
    with pytest.raises(ValueError, match="works in place"):
        gate_from_output(x, x.mul_(0.5))
    with pytest.raises(ValueError, match="one shape"):
        gate_from_output(x, x[:, :2])


def test_other_libraries_attention_is_found():
    model = timm.create_model("resnet10t", block_args={"attn_layer": "eca"})
    assert [type(module).__name__ for _, module in attention_layers(model)] == ["EcaModule"] * 4
    model = torchvision.models.efficientnet_b0()
    assert {type(module).__name__ for _, module in attention_layers(model)} == {"SqueezeExcitation"}
