"""The torch.fx search for residual branches, on small hand-written blocks."""

from __future__ import annotations

import pytest
import timm
import torch
from torch import nn

from ecanet.layers.se import SE
from ecanet.retrofit.families import SE_REASON
from ecanet.retrofit.fx_residuals import find_residual_places


class Block(nn.Module):
    """``x + tail(bn(conv(x)))`` with a configurable tail and shortcut."""

    def __init__(self, tail: str = "none", shortcut: str = "identity") -> None:
        super().__init__()
        self.conv = nn.Conv2d(16, 16, 3, padding=1)
        self.bn = nn.BatchNorm2d(16)
        self.tail = tail
        self.drop = nn.Dropout(0.5)
        self.gamma = nn.Parameter(torch.full((1, 16, 1, 1), 1e-6))
        self.se = SE(16, reduction=4)
        self.project = nn.Conv2d(16, 16, 1) if shortcut == "project" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn(self.conv(x))
        if self.tail == "scale_drop":
            out = self.drop(out * self.gamma)
        elif self.tail == "se":
            out = self.se(out)
        elif self.tail == "relu":
            out = torch.relu(out)
        elif self.tail == "no_norm":
            out = self.conv(x)
        shortcut = x if self.project is None else self.project(x)
        return torch.add(shortcut, out) if self.tail == "shortcut_first" else out + shortcut


@pytest.mark.parametrize("tail", ["none", "scale_drop", "shortcut_first"])
@pytest.mark.parametrize("shortcut", ["identity", "project"])
def test_finds_the_branch_norm(tail: str, shortcut: str) -> None:
    search = find_residual_places(nn.Sequential(Block(tail, shortcut)))
    assert search.error is None and search.additions == 1
    assert [(p.name, p.channels, p.channel_dim) for p in search.places] == [("0.bn", 16, 1)]


def test_branch_without_norm_gets_eca_after_its_convolution() -> None:
    class ConvOnly(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1, self.conv2 = nn.Conv2d(24, 8, 1), nn.Conv2d(8, 24, 3, padding=1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + self.conv2(torch.relu(self.conv1(x)))

    search = find_residual_places(ConvOnly())
    assert [(p.name, p.module_type, p.channels) for p in search.places] == [("conv2", "Conv2d", 24)]


@pytest.mark.parametrize(("tail", "reason"), [("se", "channel attention (SE)"), ("relu", "relu")])
def test_skips_branches_that_do_not_end_in_a_norm(tail: str, reason: str) -> None:
    search = find_residual_places(nn.Sequential(Block(tail)))
    assert search.places == []
    assert len(search.skipped) == 1 and reason in search.skipped[0].reason
    assert search.skipped[0].name.startswith("0 (")


def test_module_called_twice_is_skipped() -> None:
    class Shared(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.bn = nn.Conv2d(16, 16, 1), nn.BatchNorm2d(16)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = x + self.bn(self.conv(x))
            return x + self.bn(self.conv(x))

    search = find_residual_places(Shared())
    assert search.places == [] and {s.name for s in search.skipped} == {"bn"}
    assert "called 2 times" in search.skipped[0].reason


@pytest.mark.parametrize("where", ["end", "on the way"])
def test_a_branch_whose_value_is_used_elsewhere_too_is_skipped(where: str) -> None:
    # ECA would change every use of the end module's output, not only the addition's.
    class AuxiliaryHead(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.bn, self.head = nn.Conv2d(16, 16, 1), nn.BatchNorm2d(16), nn.Conv2d(16, 2, 1)
            self.drop = nn.Dropout(0.1)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            y = self.bn(self.conv(x))
            dropped = self.drop(y)
            return x + dropped, self.head(y if where == "end" else dropped)

    search = find_residual_places(AuxiliaryHead())
    assert search.places == [] and len(search.skipped) == 1
    assert "used off the branch too (head" in search.skipped[0].reason
    assert search.skipped[0].reason.startswith("BatchNorm2d" if where == "end" else "Dropout")


def test_a_branch_with_attention_before_its_end_gets_no_second_one() -> None:
    # As a RegNetY block: SE in the middle of the branch, a convolution and norm after it.
    class MidSE(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1, self.se, self.conv2, self.bn = (
                nn.Conv2d(16, 16, 1),
                SE(16, 4),
                nn.Conv2d(16, 16, 1),
                nn.BatchNorm2d(16),
            )
            self.project = nn.Conv2d(16, 16, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.project(x) + self.bn(self.conv2(self.se(self.conv1(x))))

    search = find_residual_places(MidSE())
    assert search.places == [] and [(s.name, s.reason) for s in search.skipped] == [("bn", SE_REASON)]


@pytest.mark.parametrize(("name", "se"), [("regnetx_002", False), ("regnety_002", True)])
def test_timm_regnet_branches_end_in_their_batchnorm_act(name: str, se: bool) -> None:
    # timm's BatchNormAct2d is kept whole: read inside, the branch ended in a functional batch_norm.
    search = find_residual_places(timm.create_model(name, pretrained=False))
    assert search.additions == 13
    if se:
        assert search.places == [] and {s.reason for s in search.skipped} == {SE_REASON}
    else:
        assert not search.skipped and {p.module_type for p in search.places} == {"BatchNormAct2d"}
        assert all(p.name.endswith("conv3.bn") for p in search.places)


def test_symmetric_branches_are_ambiguous() -> None:
    class TwoPaths(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.left = nn.Sequential(nn.Conv2d(16, 16, 1), nn.BatchNorm2d(16))
            self.right = nn.Sequential(nn.Conv2d(16, 16, 1), nn.BatchNorm2d(16))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.left(x) + self.right(x)

    search = find_residual_places(TwoPaths())
    assert search.places == [] and "cannot tell" in search.skipped[0].reason


def test_untraceable_model_reports_the_error_and_keeps_training_flags() -> None:
    class DataDependent(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bn = nn.BatchNorm2d(16)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + self.bn(x) if x.sum() > 0 else x

    model = DataDependent().train()
    model.bn.eval()
    search = find_residual_places(model)
    assert search.error is not None and search.places == []
    assert model.training and not model.bn.training


def test_channels_last_layer_norm_branch() -> None:
    class TokenBlock(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc, self.norm = nn.Linear(32, 32), nn.LayerNorm(32)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + self.norm(self.fc(x))

    search = find_residual_places(TokenBlock())
    assert [(p.name, p.channels, p.channel_dim) for p in search.places] == [("norm", 32, -1)]


def test_adding_a_parameter_is_not_a_residual_addition() -> None:
    class Biased(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 16, 3), nn.BatchNorm2d(16)
            self.offset = nn.Parameter(torch.zeros(1, 16, 1, 1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.bn(self.conv(x)) + self.offset

    search = find_residual_places(Biased())
    assert search.error is None and search.additions == 0 and search.skipped == []
