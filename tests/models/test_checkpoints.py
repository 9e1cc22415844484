import os
import warnings
from functools import partial

import pytest
import torch

from ecanet import ECA, SE, load_official_checkpoint
from ecanet.models import mobilenetv2, resnet
from ecanet.models.checkpoints import StateDictDiff, infer_model, load_matching_state_dict, read_state_dict

torchvision = pytest.importorskip("torchvision")


def _official_container(model):
    """The authors' file layout: a torch.save dict whose state_dict carries DataParallel's prefixes."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    return {
        "epoch": 100,
        "arch": "wrong_arch_name",  # one released file's arch field is wrong; it must not matter
        "state_dict": {f"module.{key}": value for key, value in model.state_dict().items()},
        "best_prec1": 77.48,
        "optimizer": optimizer.state_dict(),
    }


def _randomize(model):
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.1)
    return model


def _assert_same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


@pytest.mark.parametrize("legacy_format", [False, True])
@pytest.mark.parametrize(
    ("builder", "kwargs"),
    [
        (resnet.eca_resnet50, {"kernel_sizes": (3, 3, 7, 7)}),  # the detection backbones' k, not the default
        (resnet.eca_resnet18, {"kernel_sizes": (5, 1, 9, 3), "small_input": True, "in_chans": 1}),
    ],
)
def test_official_container_loads_without_a_model(tmp_path, builder, kwargs, legacy_format):
    source = _randomize(builder(width=8, num_classes=10, **kwargs))
    path = tmp_path / "eca_k3377.pth.tar"
    torch.save(_official_container(source), path, _use_new_zipfile_serialization=not legacy_format)
    loaded = load_official_checkpoint(path)
    assert type(loaded.layer1[0]) is type(source.layer1[0])
    stages = (loaded.layer1, loaded.layer2, loaded.layer3, loaded.layer4)
    assert [stage[-1].eca.kernel_size for stage in stages] == list(kwargs["kernel_sizes"])
    assert [len(stage) for stage in stages] == [
        len(s) for s in (source.layer1, source.layer2, source.layer3, source.layer4)
    ]
    _assert_same_weights(loaded, source)
    x = torch.randn(2, source.conv1.in_channels, 32, 32)
    torch.testing.assert_close(loaded.eval()(x), source.eval()(x), rtol=0, atol=0)


def test_official_container_loads_into_a_given_model(tmp_path):
    source = _randomize(resnet.eca_resnet34(width=8, kernel_sizes=(3, 3, 5, 7)))
    torch.save(_official_container(source), tmp_path / "eca_resnet34_k3357.pth.tar")
    target = resnet.eca_resnet34(width=8)  # the official k are the default
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing is new: no warning
        assert load_official_checkpoint(tmp_path / "eca_resnet34_k3357.pth.tar", target) is target
    _assert_same_weights(target, source)


def test_mobilenet_container_infers_width_classes_and_per_block_k(tmp_path):
    kernels = [1, 3] * 8 + [5]
    source = _randomize(mobilenetv2.eca_mobilenet_v2(width_mult=0.5, num_classes=7, kernel_sizes=kernels))
    torch.save(_official_container(source), tmp_path / "eca_mobilenetv2_k13.pth.tar")
    loaded = load_official_checkpoint(tmp_path / "eca_mobilenetv2_k13.pth.tar")
    assert [block.eca.kernel_size for block in loaded.features[1:18]] == kernels
    assert loaded.classifier[1].out_features == 7
    _assert_same_weights(loaded, source)


@pytest.mark.parametrize(
    "builder",
    [resnet.resnet18, resnet.se_resnet50, resnet.cbam_resnet18, mobilenetv2.mobilenet_v2, mobilenetv2.se_mobilenet_v2],
)
def test_bare_state_dicts_of_other_variants(tmp_path, builder):
    kwargs = {"width_mult": 0.5} if "mobilenet" in builder.__name__ else {"width": 16}
    source = _randomize(builder(num_classes=3, **kwargs))
    torch.save(source.state_dict(), tmp_path / "bare.pth")
    loaded = load_official_checkpoint(tmp_path / "bare.pth")
    assert [type(m) for m in loaded.modules()] == [type(m) for m in source.modules()]
    _assert_same_weights(loaded, source)


@pytest.mark.parametrize(
    ("torchvision_name", "builder", "new_keys"),
    [
        ("resnet18", resnet.eca_resnet18, 8),
        ("resnet50", resnet.eca_resnet50, 16),
        ("mobilenet_v2", mobilenetv2.eca_mobilenet_v2, 17),
    ],
)
def test_torchvision_weights_load_into_eca_models_with_only_eca_new(tmp_path, torchvision_name, builder, new_keys):
    plain = _randomize(getattr(torchvision.models, torchvision_name)(weights=None))
    torch.save(plain.state_dict(), tmp_path / "torchvision.pth")
    model = builder()
    eca_before = {name: p.clone() for name, p in model.named_parameters() if ".conv.weight" in name and p.dim() == 3}
    with pytest.warns(UserWarning, match=rf"{new_keys} attention tensors are not in the state dict") as record:
        load_official_checkpoint(tmp_path / "torchvision.pth", model)
    assert "eca.conv.weight" in str(record[0].message) or "conv.4.conv.weight" in str(record[0].message)
    loaded = model.state_dict()
    for key, value in plain.state_dict().items():
        assert torch.equal(loaded[key], value), key
    assert len(eca_before) == new_keys
    for name, before in eca_before.items():
        assert torch.equal(loaded[name], before)  # ECA kernels keep their initialisation


def test_load_matching_state_dict_reports_new_attention_keys():
    model = resnet.eca_resnet18(width=8)
    with pytest.warns(UserWarning):
        diff = load_matching_state_dict(model, resnet.resnet18(width=8).state_dict())
    assert diff.loadable and diff.unexpected == [] and diff.mismatched == []
    assert diff.new_attention == [f"layer{s}.{n}.eca.conv.weight" for s in range(1, 5) for n in range(2)]


def test_refuses_a_pickled_callable_without_running_it(tmp_path):
    marker = tmp_path / "the_pickle_ran"

    class Payload:
        def __reduce__(self):
            return (os.mkdir, (str(marker),))

    for legacy in (False, True):
        path = tmp_path / f"malicious_{legacy}.pth.tar"
        container = _official_container(resnet.eca_resnet18(width=8))
        container["payload"] = Payload()
        torch.save(container, path, _use_new_zipfile_serialization=not legacy)
        with pytest.raises(
            ValueError, match=r"refusing to load .* pickled objects other than tensors.*GLOBAL \w+\.mkdir"
        ):
            load_official_checkpoint(path)
        assert not marker.exists()


def test_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a file"):
        read_state_dict(tmp_path / "missing.pth")
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    with pytest.raises(ValueError, match=r"is not a (readable )?PyTorch checkpoint"):
        read_state_dict(tmp_path / "notes.txt")
    for legacy in (False, True):
        path = tmp_path / f"full_{legacy}.pth"
        torch.save(_official_container(resnet.eca_resnet18(width=8)), path, _use_new_zipfile_serialization=not legacy)
        truncated = tmp_path / f"truncated_{legacy}.pth"
        truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        with pytest.raises(ValueError, match="truncated or corrupted"):
            read_state_dict(truncated)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ([1, 2, 3], "holds a list, not a .*state dict"),
        ({}, "holds a dict, not a .*state dict"),
        ({"fc.weight": torch.zeros(2), "note": "hello"}, r"entries \['note'\] are not tensors"),
    ],
)
def test_content_errors(tmp_path, content, message):
    torch.save(content, tmp_path / "odd.pth")
    with pytest.raises(ValueError, match=message):
        read_state_dict(tmp_path / "odd.pth")


def test_prefix_stripping_and_wrappers(tmp_path):
    torch.save({"model": {"module.fc.bias": torch.ones(2), "fc.weight": torch.ones(2, 3)}}, tmp_path / "m.pth")
    assert list(read_state_dict(tmp_path / "m.pth")) == ["fc.bias", "fc.weight"]
    torch.save(
        {"state_dict": {"module.module.fc.bias": torch.ones(2)}}, tmp_path / "nested.pth"
    )  # DDP over DataParallel
    assert list(read_state_dict(tmp_path / "nested.pth")) == ["fc.bias"]


def test_mismatch_lists_missing_unexpected_and_mismatched_keys(tmp_path):
    torch.save(_official_container(resnet.eca_resnet34(width=8)), tmp_path / "r34.pth.tar")
    target = resnet.eca_resnet18(width=16)
    before = {key: value.clone() for key, value in target.state_dict().items()}
    with pytest.raises(ValueError) as error:
        load_official_checkpoint(tmp_path / "r34.pth.tar", target)
    message = str(error.value)
    assert "does not fit ResNet" in message
    assert "unexpected (not in the model)" in message and "layer1.2.conv1.weight" in message
    assert "shape mismatch (state dict vs model)" in message and "conv1.weight [8, 3, 7, 7] vs [16, 3, 7, 7]" in message
    for key, value in target.state_dict().items():  # left unchanged
        assert torch.equal(value, before[key])
    state = resnet.eca_resnet18(width=8).state_dict()
    del state["fc.bias"]
    with pytest.raises(ValueError, match=r"missing from the state dict \(1\): fc.bias"):
        load_matching_state_dict(resnet.eca_resnet18(width=8), state)


def test_plain_model_refuses_eca_weights():
    with pytest.raises(ValueError, match=r"unexpected \(not in the model\) \(8\): layer1.0.eca.conv.weight"):
        load_matching_state_dict(resnet.resnet18(width=8), resnet.eca_resnet18(width=8).state_dict())


def test_infer_model_errors():
    with pytest.raises(ValueError, match="cannot infer the architecture"):
        infer_model({"encoder.weight": torch.zeros(3)})
    state = resnet.eca_resnet18(width=8).state_dict()
    state["layer2.1.eca.conv.weight"] = torch.zeros(1, 1, 9)
    with pytest.raises(ValueError, match="the blocks of layer2 use different attention settings"):
        infer_model(state)
    state = resnet.resnet18(width=8).state_dict()
    del state["fc.weight"]
    with pytest.raises(ValueError, match=r"lacks 'fc\.weight'"):
        infer_model(state)
    with pytest.raises(TypeError, match=r"model must be an nn\.Module"):
        load_matching_state_dict("resnet18", state)


def test_infer_model_handles_per_channel_eca():
    source = resnet.resnet18(width=8, attention=lambda channels: ECA(channels, 3, shared=False))
    inferred = infer_model(source.state_dict())
    assert not inferred.layer3[0].eca.shared and inferred.layer3[0].eca.conv.weight.shape == (32, 1, 3)


def test_describe_truncates_long_lists():
    diff = StateDictDiff(unexpected=[f"k{i}" for i in range(20)])
    assert diff.describe() == "unexpected (not in the model) (20): k0, k1, k2, k3, k4, k5, k6, k7, ... (12 more)"
    assert not diff.loadable
    assert StateDictDiff().describe() == "state dict matches the model"


@pytest.mark.parametrize(
    ("channels", "reduction", "min_channels"), [(24, 5, 1), (64, 16, 8), (24, 16, 5), (40, 16, 7), (8, 16, 16)]
)
def test_infer_model_reproduces_se_hidden_widths(channels, reduction, min_channels):
    spec = partial(SE, reduction=reduction, min_channels=min_channels)
    source = resnet.resnet18(width=channels, attention=spec)
    inferred = infer_model(source.state_dict())
    hidden = [m.hidden_channels for m in source.modules() if isinstance(m, SE)]
    assert [m.hidden_channels for m in inferred.modules() if isinstance(m, SE)] == hidden
    assert min_channels == 1 or min_channels in hidden  # the min_channels edge case is exercised
