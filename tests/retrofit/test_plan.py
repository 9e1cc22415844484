"""plan_eca: strategy choice, include/exclude patterns, min_channels, kernel sizes, argument errors."""

from __future__ import annotations

import pytest
import torch
import torchvision.models as tvm
from torch import nn

from ecanet.retrofit import plan_eca

RESNET18_PLACES = [f"layer{s}.{b}.bn2" for s in range(1, 5) for b in range(2)]
RESNET18_CHANNELS = {f"layer{s}.{b}.bn2": 64 * 2 ** (s - 1) for s in range(1, 5) for b in range(2)}


@pytest.fixture(scope="module")
def resnet18() -> nn.Module:
    return tvm.resnet18(num_classes=10)


def test_plan_does_not_change_the_model(resnet18: nn.Module) -> None:
    before = {name: type(m) for name, m in resnet18.named_modules()}
    report = plan_eca(resnet18)
    assert not report.applied and [p.name for p in report.places] == RESNET18_PLACES
    assert {name: type(m) for name, m in resnet18.named_modules()} == before


@pytest.mark.parametrize(
    ("include", "exclude", "expected"),
    [
        ("layer4", None, ["layer4.0.bn2", "layer4.1.bn2"]),
        (
            ["layer1.0*", "*.1.bn2"],
            None,
            ["layer1.0.bn2", "layer1.1.bn2", "layer2.1.bn2", "layer3.1.bn2", "layer4.1.bn2"],
        ),
        (None, ["layer[12]"], ["layer3.0.bn2", "layer3.1.bn2", "layer4.0.bn2", "layer4.1.bn2"]),
        ("layer4", "layer4.1", ["layer4.0.bn2"]),
    ],
)
def test_include_exclude_patterns(resnet18: nn.Module, include, exclude, expected: list[str]) -> None:
    report = plan_eca(resnet18, include=include, exclude=exclude)
    assert [p.name for p in report.places] == expected
    assert sorted(s.name for s in report.skipped) == sorted(set(RESNET18_PLACES) - set(expected))


def test_min_channels(resnet18: nn.Module) -> None:
    report = plan_eca(resnet18, min_channels=256)
    assert [p.name for p in report.places] == RESNET18_PLACES[4:]
    assert all("< min_channels=256" in s.reason for s in report.skipped)


@pytest.mark.parametrize(
    ("kernel_size", "expected"),
    [
        ("adaptive", {64: 3, 128: 5, 256: 5, 512: 5}),
        (7, {64: 7, 128: 7, 256: 7, 512: 7}),
        (
            lambda name, channels: 1 if name.startswith("layer1") else channels // 64 * 2 + 1,
            {64: 1, 128: 5, 256: 9, 512: 17},
        ),
    ],
)
def test_kernel_size_forms(resnet18: nn.Module, kernel_size, expected: dict[int, int]) -> None:
    report = plan_eca(resnet18, kernel_size=kernel_size)
    assert {p.channels: p.kernel_size for p in report.places} == expected
    assert report.params_added == sum(expected[RESNET18_CHANNELS[p.name]] for p in report.places)


def test_gamma_and_beta_steer_the_adaptive_rule_and_shared_false_counts_k_times_c(resnet18: nn.Module) -> None:
    report = plan_eca(resnet18, gamma=1.0, beta=0.0, shared=False)
    # gamma=1, b=0: t = floor(log2 C), odd or next odd: 64 -> 7, 128 -> 7, 256 -> 9, 512 -> 9.
    assert {p.channels: p.kernel_size for p in report.places} == {64: 7, 128: 7, 256: 9, 512: 9}
    assert report.params_added == 2 * (7 * 64 + 7 * 128 + 9 * 256 + 9 * 512)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"kernel_size": 4}, ValueError, "kernel_size must be a positive odd int, got 4"),
        ({"kernel_size": "auto"}, ValueError, "'adaptive', a positive odd int or a callable"),
        ({"kernel_size": lambda name, channels: 2}, ValueError, "got 2 from kernel_size"),
        ({"min_channels": 0}, ValueError, "min_channels must be a positive int, got 0"),
        ({"include": 3}, TypeError, "include must be a pattern string"),
        ({"replace_se": "yes"}, TypeError, "replace_se must be a bool"),
        ({"channel_dim": -1}, TypeError, r"unexpected keyword argument\(s\) \['channel_dim'\]"),
        ({"padding": "reflect"}, ValueError, "padding must be one of"),
        ({"shared": False, "pooling": "max"}, ValueError, "pooling must be one of"),
    ],
)
def test_argument_errors(resnet18: nn.Module, kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        plan_eca(resnet18, **kwargs)


def test_model_must_be_a_module() -> None:
    with pytest.raises(TypeError, match=r"model must be a torch\.nn\.Module, got Tensor"):
        plan_eca(torch.zeros(1))


def test_untraceable_model_falls_back_to_norms_with_a_note() -> None:
    class Untraceable(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 32, 3), nn.BatchNorm2d(32)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.bn(self.conv(x))
            return y + 1 if y.mean() > 0 else y

    report = plan_eca(Untraceable())
    assert [(p.name, p.strategy) for p in report.places] == [("bn", "norm fallback")]
    assert any("could not trace" in note for note in report.notes)


def test_model_without_norms_is_reported() -> None:
    report = plan_eca(nn.Sequential(nn.Conv2d(3, 32, 3), nn.ReLU()))
    assert len(report) == 0 and any("no feature-map normalization" in note for note in report.notes)
