import math

import pytest

from ecanet import eca_kernel_size

# Derived by hand from t = floor((log2 C + 1) / 2), k = t if t odd else t + 1:
#   C=1: log2=0, t=floor(0.5)=0 -> 1      C=2: t=floor(1)=1 -> 1      C=4: t=floor(1.5)=1 -> 1
#   C=8: t=floor(2)=2 -> 3 (tie goes up)  C=16: t=floor(2.5)=2 -> 3   C=64: t=floor(3.5)=3 -> 3
#   C=96: log2=6.58, t=floor(3.79)=3 -> 3 C=128: t=floor(4)=4 -> 5    C=256: t=floor(4.5)=4 -> 5
#   C=512: t=floor(5)=5 -> 5              C=1024: t=floor(5.5)=5 -> 5 C=2048: t=floor(6)=6 -> 7
#   C=4096: t=floor(6.5)=6 -> 7           C=16384: t=floor(7.5)=7 -> 7   C=32768: t=8 -> 9
#   C=320: log2=8.32, t=4 -> 5  C=1280: log2=10.32, t=5 -> 5
PAPER_TABLE = {
    1: 1,
    2: 1,
    4: 1,
    8: 3,
    16: 3,
    24: 3,
    32: 3,
    64: 3,
    96: 3,
    128: 5,
    160: 5,
    256: 5,
    320: 5,
    512: 5,
    1024: 5,
    1280: 5,
    2048: 7,
    4096: 7,
    8192: 7,
    16384: 7,
    32768: 9,
}


@pytest.mark.parametrize(("channels", "expected"), sorted(PAPER_TABLE.items()))
def test_paper_rule(channels, expected):
    assert eca_kernel_size(channels) == expected


@pytest.mark.parametrize(("channels", "expected"), [(1, 3), (4, 3), (8, 3), (64, 3), (128, 5), (2048, 7)])
def test_min_size_three_is_timms_rule(channels, expected):
    assert eca_kernel_size(channels, min_size=3) == expected


def test_result_is_always_odd_and_grows_with_channels():
    sizes = [eca_kernel_size(c) for c in range(1, 5000)]
    assert all(k % 2 == 1 for k in sizes)
    assert sizes == sorted(sizes)


def test_ties_are_exact_for_every_power_of_two():
    # (log2(2^p) + 1) / 2 is an integer for odd p: the float rounding of log(C, 2) must not matter.
    for p in range(1, 60, 2):
        t = (p + 1) // 2
        assert eca_kernel_size(2**p) == (t if t % 2 else t + 1)
    assert math.log(2**29, 2) != 29  # the pitfall the rule avoids: log(C, 2) is inexact here


def test_custom_gamma_and_beta():
    assert eca_kernel_size(256, gamma=1.0, beta=0.0) == 9  # t = 8 -> 9
    assert eca_kernel_size(256, gamma=4.0, beta=1.0) == 3  # t = floor(2.25) = 2 -> 3


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"channels": 0}, "channels must be a positive int"),
        ({"channels": -3}, "channels must be a positive int"),
        ({"channels": 2.0}, "channels must be a positive int"),
        ({"channels": True}, "channels must be a positive int"),
        ({"channels": 8, "gamma": 0}, "gamma must be a finite number > 0"),
        ({"channels": 8, "gamma": float("inf")}, "gamma must be a finite number > 0"),
        ({"channels": 8, "beta": float("nan")}, "beta must be a finite number"),
        ({"channels": 8, "min_size": 2}, "min_size must be a positive odd int"),
        ({"channels": 8, "min_size": 0}, "min_size must be a positive odd int"),
    ],
)
def test_invalid_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        eca_kernel_size(**kwargs)
