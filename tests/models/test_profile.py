import pytest
import torch
from torch import nn

from ecanet import profile_model
from ecanet.models.profile import PAPER_TABLE3, ModelProfile, profile_registered_model
from ecanet.models.resnet import eca_resnet18, resnet18


def _macs_by_hand(model, input_size):
    """Multiply-adds of every convolution and linear layer, from their output shapes (hooks)."""
    total = 0

    def count(module, args, output):
        nonlocal total
        if isinstance(module, nn.Conv2d):
            kernel = module.kernel_size[0] * module.kernel_size[1]
            total += output.numel() * (module.in_channels // module.groups) * kernel
        else:
            total += output.numel() * module.in_features

    handles = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model.eval()(torch.zeros(input_size))
    for handle in handles:
        handle.remove()
    return total


@pytest.mark.parametrize("name", ["eca_resnet50", "resnet50", "se_resnet50", "cbam_resnet50", "eca_mobilenet_v2"])
def test_parameter_counts_in_paper_units(name):
    profile = profile_registered_model(name)
    assert round(profile.params_paper_units, 2) == PAPER_TABLE3[name][0]


def test_eca_resnet50_has_80_attention_parameters():
    profile = profile_registered_model("eca_resnet50")
    assert profile.attention_params == 80
    assert profile.params == 25_557_032 + 80  # torchvision's ResNet-50 plus the 16 kernels


def test_attention_parameters_of_se_and_plain():
    # SE-ResNet-50: two bias-free C x C/16 layers per block, C = 256, 512, 1024, 2048 over 3, 4, 6, 3 blocks.
    expected = sum(n * 2 * c * c // 16 for c, n in ((256, 3), (512, 4), (1024, 6), (2048, 3)))
    assert profile_registered_model("se_resnet50").attention_params == expected
    assert profile_registered_model("resnet50").attention_params == 0


@pytest.mark.parametrize("builder", [resnet18, eca_resnet18])
def test_macs_match_a_count_by_hand(builder):
    model = builder(width=8, num_classes=10)
    profile = profile_model(model, (2, 3, 64, 64))
    assert profile.macs == _macs_by_hand(model, (2, 3, 64, 64))
    assert profile.flops == 2 * profile.macs
    assert profile.input_size == (2, 3, 64, 64)


def test_resnet50_macs_at_224():
    profile = profile_registered_model("resnet50")
    assert round(profile.gmacs, 2) == 4.09  # the widely quoted 4.09 GMACs of ResNet-50
    assert profile.macs_paper_units == pytest.approx(profile.macs / 2**30)


def test_unit_properties():
    profile = ModelProfile(params=2**20, attention_params=0, flops=2 * 10**9, macs=10**9, input_size=(1,))
    assert (profile.params_millions, profile.params_paper_units) == (1.048576, 1.0)
    assert profile.gmacs == 1.0 and profile.macs_paper_units == pytest.approx(0.9313225746)


def test_training_mode_is_restored_and_meta_models_allocate_nothing():
    model = eca_resnet18(width=8)
    frozen = [module.eval() for module in model.modules() if isinstance(module, torch.nn.BatchNorm2d)][:3]
    profile_model(model, (1, 3, 32, 32))
    assert model.training and model.layer1.training
    assert not any(module.training for module in frozen)  # each module's own flag, not the root's
    with torch.device("meta"):
        big = eca_resnet18()
    assert profile_model(big.eval(), (1, 3, 224, 224)).params == 11_689_512 + 44
    assert not big.training


@pytest.mark.parametrize(
    ("input_size", "message"),
    [((1, 3, 0, 32), "input_size must be a sequence of positive ints"), ((), "input_size must be")],
)
def test_errors(input_size, message):
    with pytest.raises(ValueError, match=message):
        profile_model(resnet18(width=8), input_size)


def test_type_errors():
    with pytest.raises(TypeError, match=r"model must be an nn\.Module"):
        profile_model(lambda x: x)
    with pytest.raises(ValueError, match=r"input_size must be \(N, C, H, W\)-like"):
        profile_registered_model("resnet18", (3,))
