"""add_eca / remove_eca on real model families and the hand-written networks of conftest.py."""

from __future__ import annotations

import copy
import io
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
import timm
import torch
import torchvision.models as tvm
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import ecanet
from ecanet import add_eca, remove_eca
from ecanet.layers.se import SE
from ecanet.retrofit import ECAAfter, ECAInsteadOf
from reference import eca_reference


def paper_k(channels: int) -> int:
    """The paper's snippet: t = int(abs((log2(C) + b) / gamma)), k = t if t is odd else t + 1."""
    t = int(abs((math.log2(channels) + 1) / 2))
    return t if t % 2 else t + 1


def stages(template: str, depths: list[int], start: int = 1) -> list[str]:
    return [template.format(s=s, b=b) for s, depth in enumerate(depths, start) for b in range(depth)]


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@dataclass(frozen=True)
class Case:
    build: Callable[[], nn.Module]
    inserts: list[str]
    swaps: list[str] = field(default_factory=list)
    channel_dim: int = 1


CASES = {
    "tv_resnet18": Case(lambda: tvm.resnet18(num_classes=10), stages("layer{s}.{b}.bn2", [2, 2, 2, 2])),
    "tv_resnet50": Case(lambda: tvm.resnet50(num_classes=10), stages("layer{s}.{b}.bn3", [3, 4, 6, 3])),
    "tv_mobilenet_v2": Case(
        lambda: tvm.mobilenet_v2(num_classes=10), ["features.1.conv.2"] + [f"features.{i}.conv.3" for i in range(2, 18)]
    ),
    "tv_mobilenet_v3_small": Case(
        lambda: tvm.mobilenet_v3_small(num_classes=10),
        inserts=["features.2.block.2.1", "features.3.block.2.1"],
        swaps=["features.1.block.1"] + [f"features.{i}.block.2" for i in range(4, 12)],
    ),
    "tv_efficientnet_b0": Case(
        lambda: tvm.efficientnet_b0(num_classes=10),
        inserts=[],
        swaps=["features.1.0.block.1", *stages("features.{s}.{b}.block.2", [2, 2, 3, 3, 4, 1], start=2)],
    ),
    "tv_convnext_tiny": Case(
        lambda: tvm.convnext_tiny(num_classes=10),
        [
            f"features.{s}.{b}.block.5"
            for s, depth in zip((1, 3, 5, 7), (3, 3, 9, 3), strict=True)
            for b in range(depth)
        ],
        channel_dim=-1,
    ),
    "tv_regnet_x_400mf": Case(
        lambda: tvm.regnet_x_400mf(num_classes=10), stages("trunk_output.block{s}.block{s}-{b}.f.c.1", [1, 2, 7, 12])
    ),
    "timm_resnet50": Case(
        lambda: timm.create_model("resnet50", pretrained=False, num_classes=10, zero_init_last=False),
        stages("layer{s}.{b}.bn3", [3, 4, 6, 3]),
    ),
    "timm_efficientnet_b0": Case(
        lambda: timm.create_model("efficientnet_b0", pretrained=False, num_classes=10),
        inserts=[],
        swaps=stages("blocks.{s}.{b}.se", [1, 2, 2, 3, 3, 4, 1], start=0),
    ),
    "timm_mobilenetv2_100": Case(
        lambda: timm.create_model("mobilenetv2_100", pretrained=False, num_classes=10),
        ["blocks.0.0.bn2", *stages("blocks.{s}.{b}.bn3", [2, 3, 4, 3, 3, 1])],
    ),
}


@pytest.fixture(scope="module")
def built() -> Callable[[str], nn.Module]:
    """Builds each case's model once per module (in eval mode); tests deep-copy before editing."""
    cache: dict[str, nn.Module] = {}

    def get(name: str) -> nn.Module:
        if name not in cache:
            torch.manual_seed(0)
            cache[name] = CASES[name].build().eval()
        return cache[name]

    return get


def train_without_random_drops(model: nn.Module) -> None:
    """Training mode (batch statistics), but with dropout and stochastic depth off: a dropped
    branch would leave its ECA without a gradient by chance."""
    model.train()
    for module in model.modules():
        if any(part in type(module).__name__ for part in ("Dropout", "DropPath", "StochasticDepth")):
            module.eval()


def retrofit_names(model: nn.Module, kind: type) -> set[str]:
    return {name for name, module in model.named_modules() if isinstance(module, kind)}


@pytest.mark.parametrize("name", list(CASES))
def test_family_placement_training_and_exact_removal(name: str, built: Callable[[str], nn.Module]) -> None:
    case, original = CASES[name], built(name)
    model = copy.deepcopy(original)
    targets = {place: model.get_submodule(place) for place in case.inserts + case.swaps}
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        before = original(x)

    report = add_eca(model, replace_se=bool(case.swaps))

    assert not any(m.training for m in model.modules())
    assert retrofit_names(model, ECAAfter) == set(case.inserts)
    assert retrofit_names(model, ECAInsteadOf) == set(case.swaps)
    assert sorted(p.name for p in report.places) == sorted(case.inserts + case.swaps)
    expected_delta = 0
    for place, target in targets.items():
        container = model.get_submodule(place)
        if place in case.inserts:
            assert container.module is target
            channels = target.out_features if isinstance(target, nn.Linear) else target.num_features
            assert container.eca.channel_dim == case.channel_dim
        else:
            channels = next(m for m in target.modules() if isinstance(m, nn.Conv2d)).in_channels
            expected_delta -= n_params(target)
        assert container.eca.conv.weight.shape == (1, 1, paper_k(channels))
        expected_delta += paper_k(channels)
    assert n_params(model) - n_params(original) == expected_delta == report.param_delta

    with torch.no_grad():
        after = model(x)
    assert after.shape == before.shape and torch.isfinite(after).all()
    assert not torch.equal(after, before)

    assert remove_eca(model) == len(targets)
    assert all(model.get_submodule(place) is target for place, target in targets.items())
    with torch.no_grad():
        assert torch.equal(model(x), before)

    add_eca(model, replace_se=bool(case.swaps))
    train_without_random_drops(model)
    model(x).sum().backward()
    kernels = [m.eca.conv.weight for m in model.modules() if isinstance(m, (ECAAfter, ECAInsteadOf))]
    assert len(kernels) == len(targets)
    assert all(k.grad is not None and torch.isfinite(k.grad).all() and k.grad.abs().sum() > 0 for k in kernels)

    with pytest.warns(UserWarning, match="already has ECA"):
        again = add_eca(model, replace_se=bool(case.swaps))
    assert len(again) == 0 and {s.name for s in again.skipped} >= set(targets)
    assert len(kernels) == sum(isinstance(m, (ECAAfter, ECAInsteadOf)) for m in model.modules())


def test_se_blocks_get_no_second_attention_without_replace_se(built: Callable[[str], nn.Module]) -> None:
    model = copy.deepcopy(built("tv_efficientnet_b0"))
    with pytest.warns(UserWarning, match="no place"):
        report = add_eca(model)
    assert len(report) == 0 and len(report.skipped) == 16
    assert all(s.reason == "already has SE attention" for s in report.skipped)
    assert any("replace_se=True" in note for note in report.notes)
    assert n_params(model) == n_params(built("tv_efficientnet_b0"))


def test_plain_cnn_uses_the_normalization_fallback(plain_cnn: nn.Module) -> None:
    report = add_eca(plain_cnn)
    # features.1 has 8 channels (< min_channels=16); the head's BatchNorm1d sees (N, C) vectors.
    assert retrofit_names(plain_cnn, ECAAfter) == {"features.4", "features.7"}
    assert report.strategies == {"norm fallback": 2}
    assert any("no residual additions" in note for note in report.notes)
    plain_cnn(torch.randn(2, 3, 16, 16)).sum().backward()
    assert plain_cnn.features[7].eca.conv.weight.grad is not None


def test_residual_cnn_uses_fx_and_matches_a_float64_reference(residual_cnn: nn.Module) -> None:
    report = add_eca(residual_cnn, kernel_size=3)
    # Not the stem's BN (no residual) nor the projection shortcut's BN.
    assert retrofit_names(residual_cnn, ECAAfter) == {"block1.bn2", "block2.bn2"}
    assert report.strategies == {"fx residual": 2}

    model = residual_cnn.double().eval()
    x = torch.randn(2, 3, 12, 12, dtype=torch.float64)

    def block_reference(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
        branch = block.bn2.module(block.conv2(torch.relu(block.bn1(block.conv1(x)))))
        return torch.relu(eca_reference(branch, block.bn2.eca.conv.weight) + block.shortcut(x))

    with torch.no_grad():
        hidden = block_reference(model.block2, block_reference(model.block1, model.stem(x)))
        expected = model.fc(hidden.mean(dim=(2, 3)))
        torch.testing.assert_close(model(x), expected, rtol=1e-10, atol=1e-12)


def test_optimizer_gets_the_new_weights_in_the_neighbours_group(residual_cnn: nn.Module) -> None:
    norms = [p for n, p in residual_cnn.named_parameters() if ".bn" in n or "stem.1" in n or "shortcut.1" in n]
    others = [p for n, p in residual_cnn.named_parameters() if all(p is not q for q in norms)]
    sgd = torch.optim.SGD(
        [{"params": others, "weight_decay": 1e-4}, {"params": norms, "weight_decay": 0.0}], lr=0.1, momentum=0.9
    )
    add_eca(residual_cnn, optimizer=sgd)
    kernels = [residual_cnn.block1.bn2.eca.conv.weight, residual_cnn.block2.bn2.eca.conv.weight]
    assert len(sgd.param_groups) == 2
    assert all(any(k is p for p in sgd.param_groups[1]["params"]) for k in kernels)
    assert not any(k is p for k in kernels for p in sgd.param_groups[0]["params"])

    start = [k.detach().clone() for k in kernels]
    residual_cnn(torch.randn(4, 3, 16, 16)).sum().backward()
    sgd.step()
    assert all(not torch.equal(k, s) for k, s in zip(kernels, start, strict=True))


class SENet(nn.Module):
    """A tiny net with ecanet's SE in a residual block."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 32, 3, padding=1)
        self.bn = nn.BatchNorm2d(32)
        self.se = SE(32, reduction=4)
        self.fc = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        x = torch.relu(x + self.se(self.bn(x)))
        return self.fc(x.mean(dim=(2, 3)))


def test_replace_se_saves_parameters_and_updates_optimizer_and_restores() -> None:
    torch.manual_seed(0)
    model = SENet()
    se = model.se
    adam = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.randn(2, 3, 8, 8)
    model(x).sum().backward()
    adam.step()
    with torch.no_grad():
        before = model.eval()(x)
    se_params = list(se.parameters())
    assert all(p in adam.state for p in se_params)

    report = add_eca(model, replace_se=True, optimizer=adam)

    assert retrofit_names(model, ECAInsteadOf) == {"se"}
    assert report.params_removed == 2 * 32 * 8 and report.params_added == paper_k(32)
    assert report.param_delta == paper_k(32) - 512
    listed = [p for group in adam.param_groups for p in group["params"]]
    assert not any(p is q for p in se_params for q in listed)
    assert not any(p in adam.state for p in se_params)
    assert any(p is model.se.eca.conv.weight for p in listed)
    assert "se.eca.conv.weight" in model.state_dict() and "se.fc1.weight" not in model.state_dict()

    model.double()
    assert remove_eca(model) == 1
    assert model.se is se and se.fc1.weight.dtype == torch.float64
    with torch.no_grad():
        torch.testing.assert_close(model.float()(x), before)


def test_remove_eca_gives_the_optimizer_its_se_weights_back_and_takes_the_eca_ones() -> None:
    torch.manual_seed(0)
    model = SENet()
    se_params = list(model.se.parameters())
    sgd = torch.optim.SGD(
        [{"params": [model.conv.weight, model.fc.weight]}, {"params": [*model.bn.parameters(), *se_params], "lr": 0.5}],
        lr=0.1,
        momentum=0.9,
    )
    add_eca(model, replace_se=True, optimizer=sgd)
    eca_weight = model.se.eca.conv.weight
    model(torch.randn(2, 3, 8, 8)).sum().backward()
    sgd.step()
    assert eca_weight in sgd.state

    assert remove_eca(model, optimizer=sgd) == 1
    listed = [p for group in sgd.param_groups for p in group["params"]]
    assert not any(p is eca_weight for p in listed) and eca_weight not in sgd.state
    assert all(any(p is q for q in sgd.param_groups[1]["params"]) for p in se_params)  # the group ECA was in
    start = [p.detach().clone() for p in se_params]
    sgd.zero_grad()
    model(torch.randn(2, 3, 8, 8)).sum().backward()
    sgd.step()
    assert all(not torch.equal(p, s) for p, s in zip(se_params, start, strict=True))  # SE trains again


def test_model_with_its_own_eca_is_left_alone() -> None:
    model = ecanet.create_model("eca_resnet18", num_classes=10, width=16)
    with pytest.warns(UserWarning, match="already has ECA"):
        report = add_eca(model)
    assert len(report) == 0 and retrofit_names(model, ECAAfter) == set()
    assert all(s.reason == "already has ECA (the model's own)" for s in report.skipped)


def test_state_dict_round_trip(built: Callable[[str], nn.Module]) -> None:
    model = copy.deepcopy(built("tv_resnet18"))
    add_eca(model, kernel_size=lambda name, channels: 7 if name.startswith("layer4") else 3)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    fresh = tvm.resnet18(num_classes=10).eval()
    add_eca(fresh, kernel_size=lambda name, channels: 7 if name.startswith("layer4") else 3)
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    assert "layer4.1.bn2.eca.conv.weight" in fresh.state_dict()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(fresh(x), model(x))


@pytest.mark.parametrize("name", ["tv_resnet18", "tv_mobilenet_v3_small"])
def test_torchscript(name: str, built: Callable[[str], nn.Module]) -> None:
    model = copy.deepcopy(built(name))
    add_eca(model, replace_se=True)
    scripted = torch.jit.script(model)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), model(x))


def test_channels_last(built: Callable[[str], nn.Module]) -> None:
    model = copy.deepcopy(built("tv_resnet18"))
    add_eca(model)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = model(x)
        model = model.to(memory_format=torch.channels_last)
        features = model.layer1(
            model.maxpool(model.relu(model.bn1(model.conv1(x.to(memory_format=torch.channels_last)))))
        )
        assert features.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(model(x.to(memory_format=torch.channels_last)), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_torch_compile(residual_cnn: nn.Module) -> None:
    add_eca(residual_cnn)
    residual_cnn.eval()
    compiled = torch.compile(residual_cnn)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), residual_cnn(x), rtol=1e-4, atol=1e-5)


def test_ddp_single_process(residual_cnn: nn.Module, tmp_path) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    add_eca(residual_cnn)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        ddp = DistributedDataParallel(residual_cnn)
        sgd = torch.optim.SGD(ddp.parameters(), lr=0.1)
        kernel = residual_cnn.block2.bn2.eca.conv.weight
        start = kernel.detach().clone()
        for _ in range(2):
            sgd.zero_grad()
            ddp(torch.randn(4, 3, 16, 16)).sum().backward()
            sgd.step()
        assert not torch.equal(kernel, start)
        with pytest.raises(ValueError, match="before wrapping"):
            remove_eca(ddp)
    finally:
        dist.destroy_process_group()


def test_eca_options_reach_every_new_layer(residual_cnn: nn.Module) -> None:
    report = add_eca(residual_cnn, kernel_size=3, padding="circular", gate="hard_sigmoid", shared=False)
    layers = [residual_cnn.block1.bn2.eca, residual_cnn.block2.bn2.eca]
    assert all(e.padding == "circular" and e.gate == "hard_sigmoid" and not e.shared for e in layers)
    assert report.params_added == 3 * 16 + 3 * 32 == n_params(layers[0]) + n_params(layers[1])


def test_add_eca_argument_errors(residual_cnn: nn.Module) -> None:
    with pytest.raises(TypeError, match=r"optimizer must be a torch\.optim\.Optimizer or None, got list"):
        add_eca(residual_cnn, optimizer=[])
    with pytest.raises(TypeError, match=r"model must be a torch\.nn\.Module"):
        remove_eca("resnet18")
    with pytest.raises(TypeError, match=r"optimizer must be a torch\.optim\.Optimizer or None, got dict"):
        remove_eca(residual_cnn, optimizer={})
    assert remove_eca(residual_cnn) == 0
    with pytest.raises(ValueError, match="padding must be one of"):
        add_eca(residual_cnn, padding="reflect")
    assert retrofit_names(residual_cnn, ECAAfter) == set()


@pytest.mark.parametrize("fixture", ["plain_cnn", "residual_cnn"])
def test_second_call_adds_nothing(fixture: str, request: pytest.FixtureRequest) -> None:
    model = request.getfixturevalue(fixture)
    first = add_eca(model)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.warns(UserWarning, match="already has ECA everywhere"):
        second = add_eca(model)
    already = {s.name for s in second.skipped if s.reason == "already has ECA"}
    assert len(second) == 0 and already == {p.name for p in first.places}
    assert model.state_dict().keys() == state.keys()
    assert all(isinstance(model.get_submodule(p.name).module, nn.BatchNorm2d) for p in first.places)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(widths=st.lists(st.sampled_from([16, 24, 32]), min_size=1, max_size=4), kernel_size=st.sampled_from([1, 3, 5]))
def test_any_residual_stack_gets_one_eca_per_block_and_comes_back_exactly(
    residual_cnn_type: type[nn.Module], widths: list[int], kernel_size: int
) -> None:
    torch.manual_seed(0)
    model = residual_cnn_type(tuple(widths)).eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        before = model(x)
    report = add_eca(model, kernel_size=kernel_size)
    assert retrofit_names(model, ECAAfter) == {f"block{i}.bn2" for i in range(1, len(widths) + 1)}
    assert report.param_delta == kernel_size * len(widths)
    remove_eca(model)
    with torch.no_grad():
        assert torch.equal(model(x), before)
