"""Block policies of the known families, one block at a time."""

from __future__ import annotations

import pytest
import timm
import timm.models._efficientnet_blocks as timm_blocks
import timm.models.resnet as timm_resnet
import torch
import torchvision.models.convnext as tv_convnext
import torchvision.models.resnet as tv_resnet
from timm.layers import freeze_batch_norm_2d
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from ecanet import ECA, add_eca, remove_eca
from ecanet.layers.se import SE
from ecanet.retrofit.families import SE_REASON, block_policies, find_family_places


@pytest.mark.parametrize(
    ("block", "name", "channels", "channel_dim"),
    [
        (tv_resnet.BasicBlock(32, 32), "bn2", 32, 1),
        (tv_resnet.Bottleneck(64, 16), "bn3", 64, 1),
        (tv_resnet.Bottleneck(64, 16, groups=4, base_width=8), "bn3", 64, 1),  # ResNeXt-style
        (tv_convnext.CNBlock(48, layer_scale=1e-6, stochastic_depth_prob=0.0), "block.5", 48, -1),
        (timm_resnet.Bottleneck(64, 16), "bn3", 64, 1),
        (timm_blocks.InvertedResidual(16, 24, exp_ratio=4.0), "bn3", 24, 1),
        (timm_blocks.DepthwiseSeparableConv(16, 24), "bn2", 24, 1),
        (timm_blocks.EdgeResidual(16, 24), "bn2", 24, 1),
    ],
)
def test_branch_end_of_each_block(block: nn.Module, name: str, channels: int, channel_dim: int) -> None:
    places, skipped = find_family_places(nn.Sequential(block))
    assert skipped == []
    assert [(p.name, p.channels, p.channel_dim, p.action) for p in places] == [
        (f"0.{name}", channels, channel_dim, "insert")
    ]


@pytest.mark.parametrize(("attention", "reason"), [(SE(64), SE_REASON), (ECA(64), "already has ECA")])
def test_blocks_with_attention_are_skipped(attention: nn.Module, reason: str) -> None:
    block = timm_resnet.Bottleneck(64, 16)
    block.se = attention
    places, skipped = find_family_places(nn.Sequential(block))
    assert places == [] and [(s.name, s.reason) for s in skipped] == [("0.bn3", reason)]


def test_timm_se_resnet_is_recognised_as_having_se() -> None:
    places, skipped = find_family_places(timm.create_model("seresnet18", pretrained=False, num_classes=10))
    assert places == [] and len(skipped) == 8 and {s.reason for s in skipped} == {SE_REASON}


def test_policies_cover_the_issue_families() -> None:
    families = {p.family for p in block_policies()}
    assert families >= {
        "torchvision ResNet",
        "torchvision MobileNetV2",
        "torchvision MobileNetV3",
        "torchvision EfficientNet",
        "torchvision RegNet",
        "torchvision ConvNeXt",
        "timm ResNet",
        "timm EfficientNet",
    }


def test_unknown_blocks_are_searched_inside() -> None:
    wrapper = nn.ModuleDict({"backbone": nn.Sequential(tv_resnet.BasicBlock(16, 16))})
    assert [p.name for p in find_family_places(wrapper)[0]] == ["backbone.0.bn2"]


@pytest.mark.parametrize(
    ("build", "count"),
    [
        (lambda: tv_resnet.resnet50(weights=None, norm_layer=FrozenBatchNorm2d), 16),  # detection backbones
        (lambda: freeze_batch_norm_2d(timm.create_model("mobilenetv2_050", pretrained=False)), 16),
    ],
    ids=["torchvision-resnet50", "timm-mobilenetv2"],
)
def test_frozen_batchnorms_end_branches_like_batchnorms(build, count) -> None:
    model = build().eval()
    x = torch.randn(1, 3, 64, 64)
    expected = model(x)
    report = add_eca(model)
    assert len(report.places) == count and all(place.module_type.startswith("Frozen") for place in report.places)
    assert all(place.strategy.startswith("family") for place in report.places)
    assert model(x).shape == expected.shape
    remove_eca(model)
    assert torch.equal(model(x), expected)


def test_a_block_without_normalization_is_skipped_with_its_reason() -> None:
    places, skipped = find_family_places(nn.Sequential(tv_resnet.BasicBlock(16, 16, norm_layer=nn.Identity)))
    assert places == [] and [(s.name, s.reason) for s in skipped] == [
        ("0", "BasicBlock.bn2 is Identity, not a normalization")
    ]
