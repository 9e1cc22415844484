"""The normalization fallback: which layers it follows."""

from __future__ import annotations

from torch import nn

from ecanet import ECA
from ecanet.layers.se import SE
from ecanet.retrofit import ECAAfter
from ecanet.retrofit.norm_fallback import find_norm_places


def test_follows_feature_map_norms_only() -> None:
    model = nn.Sequential(
        nn.Conv3d(1, 16, 3),
        nn.BatchNorm3d(16),
        nn.Conv3d(16, 32, 3),
        nn.GroupNorm(4, 32),
        nn.Flatten(),
        nn.LayerNorm(32),
        nn.BatchNorm1d(32),
    )
    places, skipped = find_norm_places(model)
    assert [(p.name, p.module_type, p.channels) for p in places] == [("1", "BatchNorm3d", 16), ("3", "GroupNorm", 32)]
    assert skipped == []


def test_ignores_norms_inside_attention_and_reports_wrapped_ones() -> None:
    class SEWithNorm(SE):
        def __init__(self) -> None:
            super().__init__(32)
            self.norm = nn.BatchNorm2d(32)

    model = nn.Sequential(SEWithNorm(), ECAAfter(nn.BatchNorm2d(32), ECA(32)))
    places, skipped = find_norm_places(model)
    assert places == [] and [(s.name, s.reason) for s in skipped] == [("1", "already has ECA")]
