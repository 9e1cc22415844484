import pytest
import torch

from ecanet import ECA
from ecanet.experiments.variants import build_foreign_model, eca_layers, foreign_source, validate_variants


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("resnet18", None),
        ("torchvision:resnet18", ("torchvision", "resnet18")),
        ("timm:resnet26d", ("timm", "resnet26d")),
    ],
)
def test_foreign_source(spec, expected):
    assert foreign_source(spec) == expected


@pytest.mark.parametrize("spec", ["keras:resnet", "timm:", "torchvision:"])
def test_bad_foreign_specs(spec):
    with pytest.raises(ValueError, match="torchvision:NAME"):
        foreign_source(spec)


def test_validate_variants_accepts_registered_models():
    validate_variants("resnet18", ("none", "eca", "se", "cbam"))


@pytest.mark.parametrize("attention", ["se", "cbam"])
def test_foreign_models_only_get_eca(attention):
    with pytest.raises(ValueError, match=f"attention '{attention}' is not available"):
        build_foreign_model("torchvision:resnet18", attention, num_classes=10, in_chans=3)


def test_timm_model_with_eca_on_grayscale():
    torch.manual_seed(0)
    plain = build_foreign_model("timm:resnet10t", "none", num_classes=7, in_chans=1)
    with_eca = build_foreign_model("timm:resnet10t", "eca", num_classes=7, in_chans=1)
    layers = eca_layers(with_eca)
    assert eca_layers(plain) == () and len(layers) > 0
    assert all(isinstance(with_eca.get_submodule(layer.name), ECA) for layer in layers)
    added = sum(p.numel() for p in with_eca.parameters()) - sum(p.numel() for p in plain.parameters())
    assert added == sum(layer.kernel_size for layer in layers)
    assert with_eca(torch.randn(2, 1, 32, 32)).shape == (2, 7)


def test_torchvision_model_takes_grayscale_by_repeating_the_channel():
    torch.manual_seed(0)
    net = build_foreign_model("torchvision:resnet18", "none", num_classes=3, in_chans=1).eval()
    x = torch.randn(2, 1, 32, 32)
    assert torch.equal(net(x), net.model(x.expand(-1, 3, -1, -1)))
