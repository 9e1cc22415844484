"""What :class:`ecanet.ops.triton_launch.KernelLauncher` decides without a GPU.

Its launches themselves are checked by ``triton_kernel_checks.py`` (in Triton's interpreter here,
compiled by ``make gpu-check``) and ``cuda_checks.py`` (direct launches, launch hooks).
"""

import pytest

triton = pytest.importorskip("triton", reason="Triton is an optional accelerator dependency")
tl = pytest.importorskip("triton.language")

from ecanet.ops.triton_jit import channel_reduce_kernel  # noqa: E402
from ecanet.ops.triton_launch import KernelLauncher, _listening  # noqa: E402


@triton.jit
def _constexpr_first(BLOCK: tl.constexpr, out_ptr):
    tl.store(out_ptr + tl.arange(0, BLOCK), 0.0)


def test_constexprs_are_passed_in_parameter_order():
    assert KernelLauncher(channel_reduce_kernel)._constexpr_names == (
        "PRODUCT",
        "RELU",
        "SUBTRACT",
        "BLOCK_C",
        "BLOCK_S",
    )


def test_a_constexpr_before_other_parameters_is_refused():
    with pytest.raises(TypeError, match="constexpr parameters last"):
        KernelLauncher(_constexpr_first)


class _Chain:
    def __init__(self, calls):
        self.calls = calls


def test_only_a_set_hook_counts_as_listening():
    assert not _listening(None)
    assert not _listening(_Chain([]))  # Triton >= 3.5 with no hook added
    assert _listening(_Chain([print]))
    assert _listening(print)  # a hook set directly, as before Triton 3.5
