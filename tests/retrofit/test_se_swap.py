"""Finding SE modules to swap."""

from __future__ import annotations

import torchvision.ops
from torch import nn

from ecanet import ECA
from ecanet.layers.se import SE
from ecanet.retrofit import ECAInsteadOf
from ecanet.retrofit.se_swap import find_se_places


def test_finds_every_se_and_skips_swapped_ones() -> None:
    model = nn.Sequential(
        nn.Sequential(nn.Conv2d(3, 24, 1), torchvision.ops.SqueezeExcitation(24, 8)),
        SE(48, channel_dim=-1),
        ECAInsteadOf(ECA(16), SE(16)),
    )
    places, skipped = find_se_places(model)
    assert [(p.name, p.channels, p.channel_dim, p.action) for p in places] == [
        ("0.1", 24, 1, "replace_se"),
        ("1", 48, -1, "replace_se"),
    ]
    assert [(s.name, s.reason) for s in skipped] == [("2", "SE already swapped for ECA")]
