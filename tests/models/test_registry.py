import warnings

import pytest
import torch

import ecanet
from ecanet import CBAM, ECA, SE, create_model, list_models

DEPTHS = ["18", "34", "50", "101", "152"]
EXPECTED = sorted(
    [f"{prefix}resnet{depth}" for prefix in ("", "eca_", "se_", "cbam_") for depth in DEPTHS]
    + ["mobilenet_v2", "eca_mobilenet_v2", "se_mobilenet_v2"]
)
ATTENTION = {"eca": ECA, "se": SE, "cbam": CBAM}


def test_list_models_is_the_documented_set():
    assert list_models() == EXPECTED
    assert all(callable(getattr(ecanet.models, name)) for name in EXPECTED)


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("*mobilenet*", ["eca_mobilenet_v2", "mobilenet_v2", "se_mobilenet_v2"]),
        ("se_resnet1?", ["se_resnet18"]),
        ("*resnet5[0-9]", ["cbam_resnet50", "eca_resnet50", "resnet50", "se_resnet50"]),
        ("vit*", []),
    ],
)
def test_list_models_patterns(pattern, expected):
    assert list_models(pattern) == expected


def _tiny_kwargs(name):
    size = {"width_mult": 0.25} if "mobilenet" in name else {"width": 8}
    return {"num_classes": 5, "in_chans": 2, "small_input": True, **size}


@pytest.mark.parametrize("name", EXPECTED)
def test_every_model_runs_forward_and_backward(name):
    torch.manual_seed(0)
    model = create_model(name, **_tiny_kwargs(name))
    out = model(torch.randn(2, 2, 32, 32))
    assert out.shape == (2, 5)
    out.square().mean().backward()
    prefix = name.split("_")[0]
    attention = [m for m in model.modules() if isinstance(m, tuple(ATTENTION.values()))]
    if prefix in ATTENTION:
        assert attention and all(isinstance(m, ATTENTION[prefix]) for m in attention)
    else:
        assert not attention
    for parameter_name, parameter in model.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), parameter_name
    if attention:  # the attention weights are trained too
        assert any(float(p.grad.abs().sum()) > 0 for m in attention for p in m.parameters())


@pytest.mark.parametrize("name", ["eca_resnet18", "eca_resnet50", "eca_mobilenet_v2"])
@pytest.mark.parametrize("training", [False, True])
def test_hooks_on_every_eca_layer_fire_once_per_forward(name, training):
    # The blocks call ECA's fused tails rather than the module; hooks on it must still fire, and
    # a hook that only looks must not change the result.
    torch.manual_seed(0)
    model = create_model(name, **_tiny_kwargs(name)).train(training)
    x = torch.randn(2, 2, 32, 32)
    torch.manual_seed(1)
    with torch.set_grad_enabled(training):
        expected = model(x)
    layers = [m for m in model.modules() if isinstance(m, ECA)]
    seen = []
    for layer in layers:
        layer.register_forward_hook(lambda module, args, out: seen.append((module, args[0].shape, out.shape)))
    torch.manual_seed(1)
    with torch.set_grad_enabled(training):
        out = model(x)
    assert [module for module, _, _ in seen] == layers
    assert all(input_shape == output_shape for _, input_shape, output_shape in seen)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["eca_resnet18", "eca_resnet50", "eca_mobilenet_v2", "se_resnet18", "cbam_resnet18"])
def test_every_attention_network_traces_with_the_trace_check_on(name):
    # torch.jit.trace checks its trace by tracing again under no_grad: the blocks must record the
    # same operators in both grad modes.
    torch.manual_seed(0)
    model = create_model(name, **_tiny_kwargs(name)).eval()
    x = torch.randn(2, 2, 32, 32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # the shape checks become constants
        traced = torch.jit.trace(model, x)
    with torch.no_grad():
        torch.testing.assert_close(traced(x), model(x), rtol=1e-5, atol=1e-5)


def test_training_helper_call():
    model = create_model("eca_resnet18", num_classes=10, in_chans=1, small_input=True, width=16)
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    assert [model.layer1[0].eca.kernel_size, model.layer4[1].eca.kernel_size] == [3, 7]


def test_unknown_name_suggests_close_matches():
    with pytest.raises(ValueError, match=r"unknown model name 'eca_resnet5'; did you mean 'eca_resnet50'"):
        create_model("eca_resnet5")
    with pytest.raises(ValueError, match=r"unknown model name 'xyz' \(list_models\(\) gives all 23 names\)"):
        create_model("xyz")


def test_bad_arguments():
    with pytest.raises(TypeError, match="pattern must be a str"):
        list_models(3)
    with pytest.raises(TypeError, match="unexpected keyword argument 'depth'"):
        create_model("resnet18", depth=3)
