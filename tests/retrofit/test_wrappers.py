"""The retrofit containers: numerics against the float64 reference, state layout, restoration."""

from __future__ import annotations

import copy

import torch
from torch import nn

from ecanet import ECA
from ecanet.layers.se import SE
from ecanet.retrofit import ECAAfter, ECAInsteadOf
from reference import eca_reference


def test_eca_after_applies_eca_to_the_modules_output() -> None:
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(16).double().eval()
    nn.init.normal_(bn.weight)
    wrapped = ECAAfter(bn, ECA(16, dtype=torch.float64))
    x = torch.randn(3, 16, 5, 5, dtype=torch.float64)
    torch.testing.assert_close(wrapped(x), eca_reference(bn(x), wrapped.eca.conv.weight), rtol=1e-12, atol=1e-12)
    assert set(wrapped.state_dict()) >= {"module.weight", "module.running_mean", "eca.conv.weight"}
    assert wrapped.original() is bn


class _FirstOfPair(nn.Module):
    def forward(self, pair: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return pair[0]


def test_eca_after_passes_on_whatever_its_module_takes() -> None:
    # ECAAfter first offers a tensor input to ECA.after_norm (a BatchNorm inside the rescale on a
    # GPU); any other input goes to the module as it is.
    torch.manual_seed(0)
    wrapped = ECAAfter(_FirstOfPair(), ECA(16, dtype=torch.float64))
    x = torch.randn(3, 16, 5, 5, dtype=torch.float64)
    torch.testing.assert_close(wrapped((x, x + 1)), eca_reference(x, wrapped.eca.conv.weight), rtol=1e-12, atol=1e-12)


def test_eca_instead_of_hides_the_replaced_module() -> None:
    torch.manual_seed(0)
    se = SE(32, reduction=4)
    swap = ECAInsteadOf(ECA(32, dtype=torch.float64), se)
    assert list(swap.state_dict()) == ["eca.conv.weight"]
    assert [p.shape for p in swap.parameters()] == [torch.Size([1, 1, 3])]
    x = torch.randn(2, 32, 4, 4, dtype=torch.float64)
    torch.testing.assert_close(swap(x), eca_reference(x, swap.eca.conv.weight), rtol=1e-12, atol=1e-12)
    assert "replaces=SE" in repr(swap)


def test_original_follows_the_models_dtype_and_survives_deepcopy() -> None:
    se = SE(32, reduction=4)
    swap = ECAInsteadOf(ECA(32), se)
    assert swap.original() is se and se.fc1.weight.dtype == torch.float32
    swap.half()
    assert swap.original().fc1.weight.dtype == torch.float16
    twin = copy.deepcopy(swap)
    assert twin.original() is not se and torch.equal(twin.original().fc1.weight, se.fc1.weight)
