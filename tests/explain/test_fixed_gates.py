import pytest
import torch

from batchnorm_statistics import with_random_statistics
from ecanet import CBAM, ECA, SE, create_model
from ecanet.explain import attention_layers, channel_gate, fixed_gates


@pytest.mark.parametrize("layer", [ECA(6), ECA(6, inplace=True), SE(6, reduction=2), ECA(6, channel_dim=-1)])
def test_the_layer_multiplies_by_the_fixed_gate_inside_the_block_only(layer):
    torch.manual_seed(0)
    x = torch.randn(3, 6, 4, 4)
    x = x.permute(0, 2, 3, 1).contiguous() if getattr(layer, "channel_dim", 1) == -1 else x
    gate = torch.rand(6, dtype=torch.float64)
    view = (1, 1, 1, 6) if getattr(layer, "channel_dim", 1) == -1 else (1, 6, 1, 1)
    with torch.no_grad():
        expected_after = layer(x.clone())
        with fixed_gates({layer: gate}):
            out = layer(x.clone())
        torch.testing.assert_close(out, (x.double() * gate.view(view)).float(), rtol=1e-6, atol=1e-7)
        assert not layer._forward_hooks and not layer._forward_pre_hooks
        torch.testing.assert_close(layer(x.clone()), expected_after, rtol=0, atol=0)


@pytest.mark.parametrize("name", ["eca_resnet18", "eca_resnet50", "se_resnet18", "eca_mobilenet_v2"])
def test_a_gate_fixed_at_its_own_value_changes_nothing_through_the_fused_tails(name):
    # For one image, the gate a layer computes is its mean gate; fixing it there must give the
    # network's own output, which is only true if the hooks run inside ecanet's fused block tails.
    torch.manual_seed(0)
    kwargs = {"width_mult": 0.25} if "mobilenet" in name else {"width": 8}
    model = with_random_statistics(create_model(name, num_classes=4, in_chans=1, small_input=True, **kwargs).eval())
    x = torch.randn(1, 1, 32, 32)
    gates = {}

    def remember(module, args):
        gates[module] = channel_gate(module, args[0])[0]

    layers = [module for _, module in attention_layers(model)]
    handles = [layer.register_forward_pre_hook(remember) for layer in layers]
    with torch.no_grad():
        expected = model(x)
        for handle in handles:
            handle.remove()
        with fixed_gates(gates):
            torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-6)
        with fixed_gates({layers[-1]: torch.zeros_like(gates[layers[-1]])}):
            assert not torch.allclose(model(x), expected, rtol=1e-2, atol=1e-2 * float(expected.abs().max()))


def test_a_zero_gate_leaves_a_residual_block_its_shortcut():
    torch.manual_seed(0)
    model = create_model("eca_resnet18", num_classes=4, in_chans=1, small_input=True, width=8).eval()
    block = model.layer1[0]  # identity shortcut: relu(0 * branch + x) = x for the block's x >= 0
    x = torch.relu(torch.randn(2, 8, 16, 16))
    with torch.no_grad(), fixed_gates({block.eca: torch.zeros(8)}):
        torch.testing.assert_close(block(x), x, rtol=0, atol=0)


def test_bad_fixed_gates_are_refused():
    with pytest.raises(ValueError, match=r"CBAM cannot run with a fixed gate"), fixed_gates({CBAM(8): torch.ones(8)}):
        pytest.fail("a CBAM layer was given a fixed gate")
    layer = ECA(8)
    with pytest.raises(ValueError, match=r"shape \(8,\), got \[4\]"), fixed_gates({layer: torch.ones(4)}):
        pytest.fail("a gate of the wrong width was accepted")
    assert not layer._forward_hooks and not layer._forward_pre_hooks
