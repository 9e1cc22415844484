import pytest
import torch
from torch import nn

from ecanet.ops.frozen_norm import FrozenNorm, is_frozen_batchnorm


@pytest.mark.parametrize(
    ("make", "frozen"),
    [
        (lambda: nn.BatchNorm2d(4).eval(), True),
        (lambda: nn.BatchNorm2d(4), False),  # training mode: the batch's statistics
        (lambda: nn.BatchNorm2d(4, track_running_stats=False).eval(), False),  # no running statistics
        (lambda: nn.BatchNorm1d(4).eval(), False),
        (lambda: nn.GroupNorm(2, 4).eval(), False),
    ],
)
def test_only_eval_mode_batchnorm_with_running_statistics_is_frozen(make, frozen):
    norm = make()
    assert is_frozen_batchnorm(norm) == frozen
    assert (FrozenNorm.of(norm) is not None) == frozen


def test_a_frozen_norm_without_affine_is_not_folded():
    norm = nn.BatchNorm2d(4, affine=False).eval()
    assert is_frozen_batchnorm(norm) and FrozenNorm.of(norm) is None


def test_frozen_norm_holds_the_modules_own_tensors():
    norm = nn.BatchNorm2d(4, eps=1e-3).eval()
    frozen = FrozenNorm.of(norm)
    assert frozen.running_mean is norm.running_mean and frozen.running_var is norm.running_var
    assert frozen.weight is norm.weight and frozen.bias is norm.bias and frozen.eps == 1e-3


@pytest.mark.parametrize(
    ("change", "fits"),
    [
        (lambda f: f, True),
        (lambda f: f._replace(bias=torch.zeros(5)), False),  # another channel count
        (lambda f: f._replace(weight=torch.zeros(8)[::2]), False),  # not dense
        (lambda f: f._replace(running_mean=torch.zeros(4, dtype=torch.int64)), False),  # not floating point
        (lambda f: f._replace(running_var=torch.ones(4, device="meta")), False),  # another device
        (lambda f: f._replace(running_var=torch.ones(1, 4)), False),  # not one-dimensional
    ],
)
def test_fits_names_tensors_the_kernel_can_read(change, fits):
    frozen = change(FrozenNorm.of(nn.BatchNorm2d(4).eval()))
    assert frozen.fits(4, torch.device("cpu")) == fits


class _Doubled(nn.Module):
    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return 2 * weight


def test_a_parametrized_norm_is_not_folded():
    # Its weight is computed on access, not held in the module's parameters, which is where
    # FrozenNorm looks (nn.Module's attribute lookup costs host time on every call).
    norm = nn.BatchNorm2d(4).eval()
    nn.utils.parametrize.register_parametrization(norm, "weight", _Doubled())
    assert is_frozen_batchnorm(norm) and FrozenNorm.of(norm) is None
