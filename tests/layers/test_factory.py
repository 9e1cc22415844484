from functools import partial

import pytest
import torch
from torch import nn

from ecanet import CBAM, ECA, SE, create_attention


@pytest.mark.parametrize(("name", "cls"), [("eca", ECA), ("ECA", ECA), ("se", SE), ("cbam", CBAM)])
def test_names_build_their_module(name, cls):
    module = create_attention(name, 64)
    assert type(module) is cls
    assert module(torch.randn(2, 64, 4, 4)).shape == (2, 64, 4, 4)


@pytest.mark.parametrize("spec", [None, "none", "None"])
def test_no_attention(spec):
    assert create_attention(spec, 64) is None


def test_kwargs_reach_the_constructor():
    assert create_attention("eca", 64, kernel_size=7).kernel_size == 7
    assert create_attention("se", 64, reduction=8).hidden_channels == 8


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (ECA, "ECA(32, k=3, padding=zeros, pooling=avg, gate=sigmoid)"),
        (partial(ECA, kernel_size=5), "ECA(32, k=5, padding=zeros, pooling=avg, gate=sigmoid)"),
        (lambda channels: nn.Identity(), "Identity()"),
    ],
)
def test_callables_get_the_channel_count_first(spec, expected):
    assert repr(create_attention(spec, 32)) == expected


def test_callable_returning_none_means_no_attention():
    assert create_attention(lambda channels: None, 32) is None


def test_errors():
    with pytest.raises(ValueError, match=r"attention must be one of \['none', 'eca', 'se', 'cbam'\].*'sse'"):
        create_attention("sse", 32)
    with pytest.raises(TypeError, match=r"attention must be None, a name .* got int"):
        create_attention(3, 32)
    with pytest.raises(TypeError, match=r"returned str, not an nn\.Module"):
        create_attention(lambda channels: "eca", 32)
