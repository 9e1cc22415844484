import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import prune

from ecanet import CBAM, ECA, SE, add_eca, create_model, eca_kernel_size
from ecanet.models import list_models, resnet
from ecanet.models.resnet import BasicBlock, Bottleneck, ResNet, build_resnet, eca_stage_attention
from operator_log import OperatorLog
from reference import eca_reference

torchvision = pytest.importorskip("torchvision")

ARCHITECTURES = ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]
BLOCKS = {"resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3), "resnet50": (3, 4, 6, 3), "resnet101": (3, 4, 23, 3)}
BLOCKS["resnet152"] = (3, 8, 36, 3)
# The released checkpoints' k per stage (file names k3577, k3357, k3557, k3357, k3357).
OFFICIAL = {
    "resnet18": (3, 5, 7, 7),
    "resnet34": (3, 3, 5, 7),
    "resnet50": (3, 5, 5, 7),
    "resnet101": (3, 3, 5, 7),
    "resnet152": (3, 3, 5, 7),
}
# Table 3 of the paper, parameters in units of 2^20.
PAPER_PARAMS = {
    "resnet50": 24.37,
    "eca_resnet50": 24.37,
    "se_resnet50": 26.77,
    "cbam_resnet50": 26.77,
    "resnet101": 42.49,
    "eca_resnet101": 42.49,
    "resnet152": 57.40,
    "eca_resnet152": 57.40,
}


def _on_meta(builder, **kwargs):
    with torch.device("meta"):
        return builder(**kwargs)


def _shapes(model):
    return {key: list(value.shape) for key, value in model.state_dict().items()}


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_plain_state_dict_is_torchvisions(name):
    ours = _on_meta(getattr(resnet, name))
    theirs = _on_meta(getattr(torchvision.models, name), weights=None)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert _shapes(ours) == _shapes(theirs)


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_eca_state_dict_is_torchvisions_plus_official_eca_keys(name):
    ours = _on_meta(getattr(resnet, f"eca_{name}"))
    theirs = _on_meta(getattr(torchvision.models, name), weights=None)
    keys = list(ours.state_dict())
    eca_keys = [key for key in keys if ".eca." in key]
    assert [key for key in keys if ".eca." not in key] == list(theirs.state_dict())
    expected = {
        f"layer{stage + 1}.{n}.eca.conv.weight": [1, 1, OFFICIAL[name][stage]]
        for stage, count in enumerate(BLOCKS[name])
        for n in range(count)
    }
    assert {key: list(ours.state_dict()[key].shape) for key in eca_keys} == expected
    last_bn = "bn2" if name in ("resnet18", "resnet34") else "bn3"
    for key in eca_keys:  # after the branch's last BatchNorm, before the downsample
        assert keys[keys.index(key) - 1] == key.replace("eca.conv.weight", f"{last_bn}.num_batches_tracked")


@pytest.mark.parametrize(("name", "paper"), list(PAPER_PARAMS.items()))
def test_parameter_counts_match_the_paper(name, paper):
    model = _on_meta(getattr(resnet, name))
    assert round(sum(p.numel() for p in model.parameters()) / 2**20, 2) == paper


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_eca_adds_sum_of_k_parameters(name):
    model = _on_meta(getattr(resnet, f"eca_{name}"))
    plain = _on_meta(getattr(resnet, name))
    extra = sum(p.numel() for p in model.parameters()) - sum(p.numel() for p in plain.parameters())
    assert extra == sum(k * n for k, n in zip(OFFICIAL[name], BLOCKS[name], strict=True))
    if name == "resnet50":
        assert extra == 80  # the paper's ECA-ResNet-50


def _stage_kernels(model):
    return [
        [block.eca.kernel_size for block in stage] for stage in (model.layer1, model.layer2, model.layer3, model.layer4)
    ]


def test_kernel_size_choices():
    width = 16
    adaptive = _stage_kernels(resnet.eca_resnet50(width=width, kernel_sizes="adaptive"))
    assert adaptive == [[eca_kernel_size(width * 4 * 2**s)] * n for s, n in enumerate(BLOCKS["resnet50"])]
    assert _stage_kernels(resnet.eca_resnet18(width=8, kernel_sizes=9)) == [[9, 9]] * 4
    assert _stage_kernels(resnet.eca_resnet18(width=8, kernel_sizes=(1, 3, 5, 7))) == [[1, 1], [3, 3], [5, 5], [7, 7]]
    assert _stage_kernels(resnet.eca_resnet34(width=8)) == [[3] * 3, [3] * 4, [5] * 6, [7] * 3]


def test_eca_stage_attention_official_table():
    for name, kernels in OFFICIAL.items():
        assert [spec.keywords["kernel_size"] for spec in eca_stage_attention("official", name)] == list(kernels)


@pytest.mark.parametrize("spelling", ["eca", "ECA", "Eca"])
def test_the_official_kernel_sizes_follow_the_name_eca_in_any_case(spelling):
    # create_attention reads names in any case; "ECA" fell back to the adaptive k (3, 5, 5, 5 for ResNet-50).
    net = create_model("eca_resnet50", attention=spelling, width=8)
    assert [net.get_submodule(f"layer{i}.0.eca").kernel_size for i in range(1, 5)] == list(OFFICIAL["resnet50"])
    mobile = create_model("eca_mobilenet_v2", attention=spelling, width_mult=0.25)
    assert mobile.features[1].eca.kernel_size == 1 and mobile.features[17].eca.kernel_size == 3


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"kernel_sizes": "formula"}, ValueError, "kernel_sizes must be 'official', 'adaptive'"),
        ({"kernel_sizes": (3, 5, 7)}, ValueError, "kernel_sizes must be 'official', 'adaptive'"),
        ({"kernel_sizes": 4}, ValueError, "kernel_size must be odd"),
        ({"kernel_sizes": (3, 5, 7, 0)}, ValueError, "kernel_size must be a positive odd int"),
        ({"kernel_sizes": 5, "attention": "se"}, ValueError, "applies to attention='eca' only"),
        ({"attention": "cbm"}, ValueError, "attention must be one of"),
        ({"attention": ["eca", "se"]}, ValueError, "needs 4 entries"),
        ({"num_classes": 0}, ValueError, "num_classes must be a positive int"),
        ({"width": 2.5}, ValueError, "width must be a positive int"),
        ({"in_chans": -1}, ValueError, "in_chans must be a positive int"),
    ],
)
def test_builder_errors(kwargs, error, message):
    with pytest.raises(error, match=message):
        resnet.eca_resnet18(**kwargs)


def test_class_errors():
    with pytest.raises(TypeError, match="block must be BasicBlock or Bottleneck"):
        ResNet(nn.Conv2d, (1, 1, 1, 1))
    with pytest.raises(ValueError, match="layers must be four positive ints"):
        ResNet(BasicBlock, (1, 1, 1))
    with pytest.raises(ValueError, match="architecture must be one of"):
        build_resnet("resnet20")
    with pytest.raises(ValueError, match="architecture must be one of"):
        eca_stage_attention("official", "resnet26")


def test_other_attention_via_override():
    se = resnet.eca_resnet18(width=16, attention="se")
    assert isinstance(se.layer1[0].attention, SE) and se.layer1[0].eca is None
    assert _shapes(se) == _shapes(resnet.se_resnet18(width=16))
    cbam = resnet.resnet50(width=8, attention="cbam")
    assert all(isinstance(block.attention, CBAM) for stage in (cbam.layer1, cbam.layer4) for block in stage)
    custom = resnet.resnet18(width=8, attention=lambda channels: ECA(channels, gate="hard_sigmoid"))
    assert custom.layer2[1].eca.gate == "hard_sigmoid"


def test_per_stage_attention():
    model = resnet.resnet18(width=8, attention=[None, "eca", "se", "cbam"])
    assert model.layer1[0].eca is None and model.layer1[0].attention is None
    assert isinstance(model.layer2[0].eca, ECA)
    assert isinstance(model.layer3[1].attention, SE)
    assert isinstance(model.layer4[1].attention, CBAM)


def _randomize_batchnorm(model):
    generator = torch.Generator().manual_seed(0)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            channels = module.num_features
            module.weight.data = torch.rand(channels, generator=generator, dtype=module.weight.dtype) + 0.5
            module.bias.data = torch.randn(channels, generator=generator, dtype=module.bias.dtype)
            module.running_mean = torch.randn(channels, generator=generator, dtype=module.weight.dtype)
            module.running_var = torch.rand(channels, generator=generator, dtype=module.weight.dtype) + 0.5


def _bn(x, module):
    shape = (1, -1, 1, 1)
    scale = module.weight.double() / torch.sqrt(module.running_var.double() + module.eps)
    return (x - module.running_mean.double().view(shape)) * scale.view(shape) + module.bias.double().view(shape)


def _block_reference(block, x):
    """The paper's block in float64 from its weights: branch, ECA after the last BN, + shortcut, ReLU."""
    x = x.double()
    if isinstance(block, BasicBlock):
        out = torch.relu(_bn(F.conv2d(x, block.conv1.weight.double(), stride=block.stride, padding=1), block.bn1))
        out = _bn(F.conv2d(out, block.conv2.weight.double(), padding=1), block.bn2)
    else:
        out = torch.relu(_bn(F.conv2d(x, block.conv1.weight.double()), block.bn1))
        out = torch.relu(_bn(F.conv2d(out, block.conv2.weight.double(), stride=block.stride, padding=1), block.bn2))
        out = _bn(F.conv2d(out, block.conv3.weight.double()), block.bn3)
    out = eca_reference(out, block.eca.conv.weight)
    identity = x
    if block.downsample is not None:
        identity = _bn(F.conv2d(x, block.downsample[0].weight.double(), stride=block.stride), block.downsample[1])
    return torch.relu(out + identity)


@pytest.mark.parametrize("block_type", [BasicBlock, Bottleneck])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("grad_enabled", [True, False], ids=["grad", "no-grad"])
def test_eca_block_matches_float64_reference(block_type, stride, memory_format, grad_enabled):
    """Without grad a bottleneck's ECA pools through conv3 and bn3 (ecanet.models.pooling); with grad it reads out."""
    torch.manual_seed(0)
    planes = 8
    inplanes = 12
    downsample = nn.Sequential(
        nn.Conv2d(inplanes, planes * block_type.expansion, 1, stride=stride, bias=False),
        nn.BatchNorm2d(planes * block_type.expansion),
    )
    block = block_type(inplanes, planes, stride, downsample, attention=partial_eca(5)).double().eval()
    nn.init.normal_(block.eca.conv.weight)
    _randomize_batchnorm(block)
    block = block.to(memory_format=memory_format)
    x = torch.randn(2, inplanes, 8, 8, dtype=torch.float64).to(memory_format=memory_format)
    with torch.set_grad_enabled(grad_enabled):
        out = block(x)
    torch.testing.assert_close(out, _block_reference(block, x), rtol=1e-10, atol=1e-10)


def partial_eca(kernel_size):
    return lambda channels: ECA(channels, kernel_size)


@pytest.mark.parametrize("attention", ["se", "cbam"])
@pytest.mark.parametrize("block_type", [BasicBlock, Bottleneck])
def test_other_attention_sits_after_last_bn_before_addition(attention, block_type):
    block = block_type(32, 32 // block_type.expansion, attention=attention).eval()
    seen = {}
    last_bn = block.bn3 if block_type is Bottleneck else block.bn2
    last_bn.register_forward_hook(lambda module, args, output: seen.update(bn=output.clone()))
    block.attention.register_forward_hook(
        lambda module, args, output: seen.update(inp=args[0].clone(), out=output.clone())
    )
    x = torch.randn(2, 32, 6, 6)
    out = block(x)
    torch.testing.assert_close(seen["inp"], seen["bn"])
    torch.testing.assert_close(out, torch.relu(seen["out"] + x))


def test_small_input_stem_and_options():
    model = resnet.eca_resnet18(num_classes=7, in_chans=1, small_input=True, width=16)
    assert model.conv1.weight.shape == (16, 1, 3, 3) and model.conv1.stride == (1, 1)
    assert isinstance(model.maxpool, nn.Identity)
    assert model.forward_features(torch.randn(2, 1, 32, 32)).shape == (2, 128, 4, 4)
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 7)
    imagenet = resnet.resnet18(width=8)
    assert imagenet.conv1.weight.shape == (8, 3, 7, 7) and isinstance(imagenet.maxpool, nn.MaxPool2d)
    assert imagenet.forward_features(torch.randn(1, 3, 64, 64)).shape == (1, 64, 2, 2)


def test_zero_init_residual_makes_blocks_identities():
    model = resnet.eca_resnet50(width=8, zero_init_residual=True).eval()
    assert all(not block.bn3.weight.any() for block in model.layer2)
    block = model.layer1[1]
    x = torch.rand(2, 32, 5, 5)
    # bn3 is all zero (bias 0) so the branch is 0 and ECA(0) = 0: the block returns relu(x) = x.
    torch.testing.assert_close(block(x), x)


def _randomize_eca(model):
    for module in model.modules():
        if isinstance(module, ECA):
            nn.init.normal_(module.conv.weight)


def _blocks(model):
    return [block for stage in (model.layer1, model.layer2, model.layer3, model.layer4) for block in stage]


def _known_means(log):
    """For each compiled ECA forward call in ``log``: whether the caller handed it the pooled mean."""
    return [len(args) > 8 and args[8] is not None for args in log.arguments("ecanet.eca_forward.default")]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_eca_resnet50_inference_pools_through_the_projection(dtype, memory_format):
    """At 64 px the first stage's maps (16x16) are large enough for the detour to pay, the later ones not."""
    torch.manual_seed(0)
    model = create_model("eca_resnet50").eval()
    _randomize_batchnorm(model)
    _randomize_eca(model)
    model = model.to(dtype=dtype, memory_format=memory_format)
    x = torch.randn(2, 3, 64, 64, dtype=dtype).to(memory_format=memory_format)
    with torch.no_grad(), OperatorLog() as log:
        inference = model(x)
    assert _known_means(log) == [True] * len(model.layer1) + [False] * (len(_blocks(model)) - len(model.layer1))
    with OperatorLog() as log:
        recorded = model(x)  # the parameters require grad: every block pools its own output
    assert _known_means(log) == [False] * len(_blocks(model))
    tolerance = 1e-10 if dtype == torch.float64 else 1e-4
    torch.testing.assert_close(inference, recorded.detach(), rtol=0, atol=tolerance * recorded.abs().max().item())


def _forward_by_hand(model, x, block_outputs):
    """``model``'s forward from its own modules, every block tail out of place in plain float64 operators."""
    x = model.maxpool(torch.relu(model.bn1(model.conv1(x))))
    for block in _blocks(model):
        out = torch.relu(block.bn1(block.conv1(x)))
        if isinstance(block, Bottleneck):
            out = block.bn3(block.conv3(torch.relu(block.bn2(block.conv2(out)))))
        else:
            out = block.bn2(block.conv2(out))
        identity = x if block.downsample is None else block.downsample(x)
        x = torch.relu(eca_reference(out, block.eca.conv.weight) + identity)
        block_outputs.append(x)
    return model.fc(torch.flatten(model.avgpool(x), 1))


@pytest.mark.parametrize("name", ["eca_resnet18", "eca_resnet50"])
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_training_step_with_in_place_tails_matches_out_of_place_tails(name, memory_format):
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, small_input=True, width=8).double()
    _randomize_batchnorm(model)
    _randomize_eca(model)
    model = model.to(memory_format=memory_format).train()
    reference = copy.deepcopy(model)
    x = torch.randn(4, 3, 16, 16, dtype=torch.float64).to(memory_format=memory_format)
    target = torch.randint(0, 10, (4,))
    seen = {}
    for i, block in enumerate(_blocks(model)):
        last_bn = block.bn3 if isinstance(block, Bottleneck) else block.bn2
        block.register_forward_pre_hook(
            lambda module, args, i=i: seen.update({("input", i): (args[0], args[0].clone())})
        )
        last_bn.register_forward_hook(lambda module, args, out, i=i: seen.update({("branch", i): out.data_ptr()}))
        block.register_forward_hook(lambda module, args, out, i=i: seen.update({("output", i): out}))

    loss = F.cross_entropy(model(x), target)
    loss.backward()  # no "modified by an inplace operation": what the backward reads survived
    expected_outputs = []
    expected_loss = F.cross_entropy(_forward_by_hand(reference, x, expected_outputs), target)
    expected_loss.backward()

    torch.testing.assert_close(loss, expected_loss, rtol=1e-12, atol=0)
    gradients = {key: p.grad for key, p in model.named_parameters()}
    expected_gradients = {key: p.grad for key, p in reference.named_parameters()}
    assert all(gradient is not None for gradient in gradients.values())
    torch.testing.assert_close(gradients, expected_gradients, rtol=1e-9, atol=1e-12)
    for i, expected in enumerate(expected_outputs):
        output = seen["output", i]
        assert output.data_ptr() == seen["branch", i]  # the tail wrote into the last BatchNorm's output
        torch.testing.assert_close(output, expected.detach(), rtol=1e-10, atol=1e-12)  # held by a hook
        held, copied = seen["input", i]
        assert torch.equal(held, copied)  # the shortcut the backward recovers x * gate from


def _eval_block(block_type, memory_format):
    torch.manual_seed(0)
    planes, inplanes = 8, 12
    downsample = nn.Sequential(
        nn.Conv2d(inplanes, planes * block_type.expansion, 1, bias=False),
        nn.BatchNorm2d(planes * block_type.expansion),
    )
    block = block_type(inplanes, planes, 1, downsample, attention=partial_eca(3)).eval()
    nn.init.normal_(block.eca.conv.weight)
    _randomize_batchnorm(block)
    return block.to(memory_format=memory_format)


@pytest.mark.parametrize("block_type", [BasicBlock, Bottleneck])
@pytest.mark.parametrize("hooked", ["conv", "norm", "pruned-conv"])
@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_hooks_that_change_the_last_conv_or_norm_reach_ecas_pooling(block_type, hooked, compiled):
    # At inference the descriptor may be pooled before the last norm and 1x1 projection; a hook
    # that changes their output (or weight: torch.nn.utils.prune's pre-hook) must reach ECA's
    # pooling as it reaches the rescale, so inference gives what a graph-recording call gives.
    block = _eval_block(block_type, torch.contiguous_format)
    conv, norm = (block.conv3, block.bn3) if block_type is Bottleneck else (block.conv2, block.bn2)
    x = torch.randn(2, 12, 9, 9)
    if hooked == "pruned-conv":
        prune.l1_unstructured(conv, "weight", amount=0.5)
        block(x)
        with torch.no_grad():  # as an optimizer step would: conv.weight is stale until the pre-hook runs
            conv.weight_orig.mul_(3)
    else:
        (conv if hooked == "conv" else norm).register_forward_hook(lambda module, args, out: out * 2 + 1)
    run = torch.compile(block, fullgraph=True, backend="eager") if compiled else block
    with torch.no_grad():
        out = run(x)
    torch._dynamo.reset()
    torch.testing.assert_close(out, block(x).detach(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("block_type", [BasicBlock, Bottleneck])
def test_compiled_inference_pools_before_the_last_batchnorm(block_type):
    """Under torch.compile the descriptor comes from the last BatchNorm's input; eagerly the tail pools."""
    block = _eval_block(block_type, torch.contiguous_format)
    last_norm = block.bn3 if block_type is Bottleneck else block.bn2
    y = torch.randn(2, last_norm.num_features, 5, 5)
    compiled = torch.compile(lambda y: block._compiled_descriptor(y, last_norm), fullgraph=True, backend="eager")
    with torch.no_grad():
        assert block._compiled_descriptor(y, last_norm) is None
        torch.testing.assert_close(compiled(y), last_norm(y).mean((2, 3)), rtol=1e-5, atol=1e-5)
    torch._dynamo.reset()
    assert compiled(y) is None  # with grad BatchNorm may be training: the tail pools its own input


@pytest.mark.slow
@pytest.mark.parametrize("block_type", [BasicBlock, Bottleneck])
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_compiled_block_inference_matches_float64_reference(block_type, memory_format):
    block = _eval_block(block_type, memory_format)
    x = torch.randn(2, 12, 9, 9).to(memory_format=memory_format)
    with torch.inference_mode():
        out = torch.compile(block, fullgraph=True)(x)
    torch._dynamo.reset()
    expected = _block_reference(block.double(), x)
    torch.testing.assert_close(out.double(), expected, rtol=0, atol=1e-5 * expected.abs().max().item())


@pytest.mark.parametrize("name", ["eca_resnet18", "eca_resnet50", "eca_mobilenet_v2", "resnet18"])
@pytest.mark.parametrize("grad_mode", [False, True])
def test_networks_trace_with_torch_fx(name, grad_mode):
    # torchvision's feature extraction, FX quantization and the like trace the network symbolically.
    # Under no_grad the bottlenecks' pooling through the projection (CPU inference) is a choice by
    # size that a trace does not know, so the trace records the plain path.
    torch.manual_seed(0)
    kwargs = {"width_mult": 0.25} if "mobilenet" in name else {"width": 16}
    model = create_model(name, num_classes=10, **kwargs).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.set_grad_enabled(grad_mode):
        traced = torch.fx.symbolic_trace(model)
        torch.testing.assert_close(traced(x), model(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", list_models())
def test_every_registered_network_traces_with_torch_fx(name):
    # With grad mode on, eager and traced graph take the same path (no pooling through the
    # projection), so the results agree to rounding even in the deepest random networks.
    torch.manual_seed(0)
    kwargs = {"width_mult": 0.25} if "mobilenet" in name else {"width": 8}
    model = create_model(name, num_classes=10, **kwargs).eval()
    x = torch.randn(2, 3, 32, 32)
    traced = torch.fx.symbolic_trace(model)
    torch.testing.assert_close(traced(x), model(x), rtol=1e-6, atol=1e-6)


def test_torchvision_feature_extraction_of_a_retrofitted_network():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval()
    add_eca(model)
    seen = {}
    model.layer3.register_forward_hook(lambda module, args, out: seen.setdefault("layer3", out))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = model(x)
        extractor = torchvision.models.feature_extraction.create_feature_extractor
        features = extractor(model, {"layer3": "layer3", "fc": "logits"})(x)
    torch.testing.assert_close(features["logits"], expected, rtol=0, atol=0)
    torch.testing.assert_close(features["layer3"], seen["layer3"], rtol=0, atol=0)
