"""Recognising normalization layers and channel-attention modules of torch, torchvision, timm and ecanet."""

from __future__ import annotations

import pytest
import timm.layers
import timm.models._efficientnet_blocks as timm_blocks
import torchvision.models.convnext as tv_convnext
import torchvision.ops
from torch import nn

from ecanet import CBAM, ECA, SE
from ecanet.retrofit.recognize import attention_kind, conv_output, feature_map_norm, norm_output, se_output


@pytest.mark.parametrize(
    ("module", "output", "feature_map"),
    [
        (nn.BatchNorm2d(8), (8, 1), True),
        (nn.BatchNorm3d(8), (8, 1), True),
        (nn.SyncBatchNorm(8), (8, 1), True),
        (nn.BatchNorm1d(8), (8, 1), False),
        (nn.InstanceNorm2d(8), (8, 1), True),
        (nn.GroupNorm(2, 8), (8, 1), True),
        (nn.LayerNorm(8), (8, -1), False),
        (nn.LayerNorm((4, 8)), None, False),
        (tv_convnext.LayerNorm2d(8), (8, 1), True),
        (timm.layers.LayerNorm2d(8), (8, 1), True),
        (timm.layers.BatchNormAct2d(8), (8, 1), True),
        (nn.Conv2d(3, 8, 1), None, False),
    ],
)
def test_norm_output(module: nn.Module, output: tuple[int, int] | None, feature_map: bool) -> None:
    assert norm_output(module) == output
    assert feature_map_norm(module) is feature_map


@pytest.mark.parametrize(
    ("module", "kind", "width"),
    [
        (SE(64), "se", (64, 1)),
        (SE(64, channel_dim=-1), "se", (64, -1)),
        (torchvision.ops.SqueezeExcitation(64, 16), "se", (64, 1)),
        (timm.layers.SEModule(64), "se", (64, 1)),
        (timm.layers.EffectiveSEModule(64), "se", (64, 1)),
        (timm_blocks.SqueezeExcite(64), "se", (64, 1)),
        (ECA(64), "eca", None),
        (timm.layers.EcaModule(64), "eca", None),
        (timm.layers.CecaModule(64), "eca", None),
        (CBAM(64), "other", None),
        (nn.BatchNorm2d(64), None, None),
    ],
)
def test_attention_kind_and_se_width(module: nn.Module, kind: str | None, width: tuple[int, int] | None) -> None:
    assert attention_kind(module) == kind
    if width is not None:
        assert se_output(module) == width


def test_se_without_layers_is_an_error() -> None:
    with pytest.raises(ValueError, match="cannot tell the width of Identity"):
        se_output(nn.Identity())


def test_conv_output() -> None:
    assert conv_output(nn.Conv1d(4, 12, 3)) == (12, 1) and conv_output(nn.Linear(4, 12)) is None
