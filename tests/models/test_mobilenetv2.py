import pytest
import torch
from torch import nn

from ecanet import ECA, SE, eca_kernel_size
from ecanet.models import mobilenetv2
from ecanet.models.mobilenetv2 import InvertedResidual, MobileNetV2, make_divisible
from reference import eca_reference

torchvision = pytest.importorskip("torchvision")

# Unscaled output channels of the 17 blocks (the paper's setting table).
BLOCK_WIDTHS = [16, 24, 24, 32, 32, 32, 64, 64, 64, 64, 96, 96, 96, 160, 160, 160, 320]


def _on_meta(builder, **kwargs):
    with torch.device("meta"):
        return builder(**kwargs)


def _shapes(model):
    return {key: list(value.shape) for key, value in model.state_dict().items()}


def test_plain_state_dict_is_torchvisions():
    ours = _on_meta(mobilenetv2.mobilenet_v2)
    theirs = _on_meta(torchvision.models.mobilenet_v2, weights=None)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert _shapes(ours) == _shapes(theirs)


def test_eca_keys_are_the_official_ones_with_the_official_k():
    ours = _on_meta(mobilenetv2.eca_mobilenet_v2)
    theirs = _on_meta(torchvision.models.mobilenet_v2, weights=None)
    shapes = _shapes(ours)
    eca = {key: shape for key, shape in shapes.items() if key not in theirs.state_dict()}
    expected = {"features.1.conv.3.conv.weight": [1, 1, 1]}
    for index in range(2, 18):  # k = 1 below 96 channels, else 3
        expected[f"features.{index}.conv.4.conv.weight"] = [1, 1, 1 if BLOCK_WIDTHS[index - 1] < 96 else 3]
    assert eca == expected
    assert {key: shape for key, shape in shapes.items() if key not in eca} == _shapes(theirs)
    assert sum(p.numel() for p in ours.parameters()) - sum(p.numel() for p in theirs.parameters()) == 10 + 7 * 3


@pytest.mark.parametrize(
    ("builder", "paper"),
    [(mobilenetv2.mobilenet_v2, 3.34), (mobilenetv2.eca_mobilenet_v2, 3.34), (mobilenetv2.se_mobilenet_v2, 3.40)],
)
def test_parameter_counts_match_the_paper(builder, paper):
    assert round(sum(p.numel() for p in _on_meta(builder).parameters()) / 2**20, 2) == paper


def test_se_variant_has_reduction_8_where_eca_would_be():
    model = _on_meta(mobilenetv2.se_mobilenet_v2)
    for index, width in enumerate(BLOCK_WIDTHS, start=1):
        se = model.features[index].conv[-1]
        assert isinstance(se, SE) and se.channels == width and se.hidden_channels == width // 8


def test_kernel_size_choices():
    adaptive = mobilenetv2.eca_mobilenet_v2(width_mult=0.5, kernel_sizes="adaptive")
    widths = [make_divisible(c * 0.5) for c in BLOCK_WIDTHS]
    assert [block.eca.kernel_size for block in adaptive.features[1:18]] == [eca_kernel_size(c) for c in widths]
    assert {
        block.eca.kernel_size for block in mobilenetv2.eca_mobilenet_v2(width_mult=0.25, kernel_sizes=5).features[1:18]
    } == {5}
    custom = list(range(1, 35, 2))
    model = mobilenetv2.eca_mobilenet_v2(width_mult=0.25, kernel_sizes=custom)
    assert [block.eca.kernel_size for block in model.features[1:18]] == custom


def test_make_divisible_matches_torchvision_rule():
    # Nearest multiple of 8, at least 8, never more than 10% below the value.
    assert [make_divisible(v) for v in (3, 12, 16, 20, 27.9, 33.6, 1280)] == [8, 16, 16, 24, 32, 32, 1280]


def _branch(block, x):
    """The block's conv sequence up to (not including) the attention, run layer by layer."""
    for layer in list(block.conv)[:-1]:
        x = layer(x)
    return x


@pytest.mark.parametrize(("inp", "oup", "stride", "expand"), [(16, 16, 1, 6), (16, 24, 2, 6), (8, 8, 1, 1)])
def test_eca_block_matches_float64_reference(inp, oup, stride, expand):
    torch.manual_seed(0)
    block = InvertedResidual(inp, oup, stride, expand, attention=lambda c: ECA(c, 3)).double().eval()
    nn.init.normal_(block.eca.conv.weight)
    x = torch.randn(2, inp, 8, 8, dtype=torch.float64)
    expected = eca_reference(_branch(block, x), block.eca.conv.weight)
    if stride == 1 and inp == oup:
        expected = expected + x  # linear bottleneck: no activation after the addition
    torch.testing.assert_close(block(x), expected, rtol=1e-10, atol=1e-10)


def test_se_block_applies_attention_before_the_addition():
    block = InvertedResidual(16, 16, 1, 6, attention="se").eval()
    x = torch.randn(2, 16, 5, 5)
    se = block.conv[-1]
    torch.testing.assert_close(block(x), x + se(_branch(block, x)))
    assert block.eca is None


def test_small_input_and_options():
    model = mobilenetv2.eca_mobilenet_v2(num_classes=5, in_chans=1, width_mult=0.25, small_input=True)
    assert model.features[0][0].stride == (1, 1) and model.features[0][0].in_channels == 1
    assert model.forward_features(torch.randn(2, 1, 32, 32)).shape == (2, 1280, 2, 2)
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 5)
    assert model.classifier[0].p == 0.25 and mobilenetv2.mobilenet_v2().classifier[0].p == 0.2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kernel_sizes": "official2"}, "kernel_sizes must be 'official', 'adaptive'"),
        ({"kernel_sizes": [3] * 16}, "kernel_sizes must be 'official', 'adaptive'"),
        ({"kernel_sizes": 2}, "kernel_size must be odd"),
        ({"kernel_sizes": 3, "attention": "se"}, "applies to attention='eca' only"),
        ({"width_mult": 0}, "width_mult must be a number > 0"),
        ({"dropout": 1.0}, r"dropout must be in \[0, 1\)"),
        ({"num_classes": 1.5}, "num_classes must be a positive int"),
    ],
)
def test_builder_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        mobilenetv2.eca_mobilenet_v2(**kwargs)


def test_class_errors():
    with pytest.raises(ValueError, match="needs 17 entries"):
        MobileNetV2(attention=["eca"] * 3)
    with pytest.raises(ValueError, match="stride must be 1 or 2"):
        InvertedResidual(8, 8, 3, 6)


def test_attention_override_on_eca_builder():
    model = mobilenetv2.eca_mobilenet_v2(width_mult=0.25, attention=None)
    assert not any(isinstance(m, ECA) for m in model.modules())


@pytest.mark.parametrize(("inp", "stride"), [(16, 1), (8, 2)])  # with and without the shortcut
def test_hooks_on_an_eca_blocks_sequence_see_it_run(inp, stride):
    # ECA's blocks call the sequence's layers one by one (ECA takes the last BatchNorm into its
    # call); a hook on the sequence itself must still see it run, with the same result.
    torch.manual_seed(0)
    block = InvertedResidual(inp, 16, stride, 6, attention="eca").eval()
    x = torch.randn(2, inp, 8, 8)
    with torch.no_grad():
        expected = block(x)
        seen = []
        block.conv.register_forward_hook(lambda module, args, out: seen.append(out.shape))
        torch.testing.assert_close(block(x), expected, rtol=1e-6, atol=1e-6)  # the fused tail rounds once
    assert seen == [expected.shape]
