"""What :class:`ecanet.ops.triton_launch.KernelLauncher` decides without a GPU.

Its launches themselves are checked by ``triton_kernel_checks.py`` (in Triton's interpreter here,
compiled by ``make gpu-check``) and ``cuda_checks.py`` (direct launches, launch hooks).
"""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

triton = pytest.importorskip("triton", reason="Triton is an optional accelerator dependency")
tl = pytest.importorskip("triton.language")

from ecanet.ops.triton_jit import channel_reduce_kernel  # noqa: E402
from ecanet.ops.triton_launch import KernelLauncher, _listening, launch_key  # noqa: E402


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


def test_a_plan_refuses_tensors_among_its_fixed_scalars():
    with pytest.raises(TypeError, match="pass tensors per launch"):
        KernelLauncher(channel_reduce_kernel).plan(1, (torch.zeros(1),), {})


def test_a_plan_names_the_constexprs_it_lacks():
    with pytest.raises(TypeError, match=r"constexprs \['BLOCK_S', 'RELU'\] not given"):
        KernelLauncher(channel_reduce_kernel).plan(1, (), {"PRODUCT": False, "SUBTRACT": False, "BLOCK_C": 8})


def test_only_a_set_hook_counts_as_listening():
    assert not _listening(None)
    assert not _listening(_Chain([]))  # Triton >= 3.5 with no hook added
    assert _listening(_Chain([print]))
    assert _listening(print)  # a hook set directly, as before Triton 3.5


# KernelLauncher's key against Triton's own specialisation, which Triton works out for CPU tensors
# too (binding needs no GPU): launches that share a key must share a compiled kernel.
_KERNELS = {
    "channel_reduce_kernel": {"PRODUCT": False, "RELU": True, "SUBTRACT": False, "BLOCK_C": 8, "BLOCK_S": 16},
    "channel_affine_kernel": {
        "INPUT_GRADIENT": False,
        "STORE_GATES": False,
        "NORM": True,
        "INPLACE": False,
        "K": 3,
        "PER_CHANNEL": False,
        "CIRCULAR": False,
        "GATE": 0,
        "HAS_IDENTITY": True,
        "RELU": True,
        "CHANNELS_INNER": True,
        "BLOCK_C": 64,
        "BLOCK_S": 32,
    },
    "weight_gradient_kernel": {
        "K": 3,
        "PER_CHANNEL": False,
        "CIRCULAR": False,
        "GATE": 0,
        "INPLACE": False,
        "BLOCK_C": 64,
    },
}
_DTYPES = (torch.float32, torch.bfloat16, torch.float64)
_INTS = (1, 2, 16, 48, 17, 2**31 + 16)  # Triton specialises on 1, on divisibility by 16, and on int64


def _triton_specialisation(kernel, args, constexprs):
    from triton.backends.compiler import GPUTarget
    from triton.compiler import make_backend
    from triton.runtime.jit import create_function_from_signature

    binder = create_function_from_signature(kernel.signature, kernel.params, make_backend(GPUTarget("cuda", 90, 32)))
    return binder(*args, **constexprs)[1]


def _arguments(kernel, draw_class, draw_member):
    """One launch's arguments: per pointer a dtype and alignment class (and a member: which of many
    tensors of that class), per integer a value, per float a value."""
    args = []
    for param in kernel.params:
        if param.is_constexpr:
            continue
        if param.name.endswith("_ptr"):
            dtype, aligned = draw_class(("pointer", param.name))
            member = draw_member()
            # 16-byte steps keep the class; one element more breaks the alignment.
            step = 16 // torch.empty((), dtype=dtype).element_size()
            offset = member * step + (0 if aligned else 1)
            args.append(torch.zeros(offset + 32, dtype=dtype)[offset:])
        elif param.name in ("scale", "norm_eps"):
            args.append(draw_class(("float", param.name)))
        else:
            args.append(draw_class(("int", param.name)))
    return tuple(args)


@pytest.mark.parametrize("name", list(_KERNELS))
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_launches_with_one_key_share_tritons_specialisation(name, data):
    # The second launch redraws one argument's class (dtype and alignment, or value) and takes
    # other tensors of the same classes for the rest: whenever the two keys agree, so must Triton.
    from ecanet.ops import triton_jit

    kernel, constexprs = getattr(triton_jit, name), _KERNELS[name]
    strategies = {
        "pointer": st.tuples(st.sampled_from(_DTYPES), st.booleans()),
        "float": st.sampled_from((0.5, 1.0)),
        "int": st.sampled_from(_INTS),
    }
    first_classes = {}

    def first_class(slot):
        first_classes[slot] = data.draw(strategies[slot[0]])
        return first_classes[slot]

    def draw_member():
        return data.draw(st.integers(0, 3))

    first = _arguments(kernel, first_class, draw_member)
    redrawn = data.draw(st.sampled_from(sorted(first_classes)))

    def second_class(slot):
        return data.draw(strategies[slot[0]]) if slot == redrawn else first_classes[slot]

    second = _arguments(kernel, second_class, draw_member)
    values = tuple(constexprs[n] for n in KernelLauncher(kernel)._constexpr_names)
    # A planned launch fixes some trailing scalars (none, for a plain launch): the key keeps them apart.
    last_tensor = max(i for i, a in enumerate(first) if isinstance(a, torch.Tensor))
    split = data.draw(st.integers(last_tensor + 1, len(first)))
    if launch_key(0, values, first[split:], first[:split]) == launch_key(0, values, second[split:], second[:split]):
        assert _triton_specialisation(kernel, first, constexprs) == _triton_specialisation(kernel, second, constexprs)


def test_a_key_tells_apart_what_triton_specialises_on():
    # The converse matters for speed only, but shows the comparison above can fail: an unaligned
    # pointer, an int of 1 and an int divisible by 16 each change both Triton's specialisation and the key.
    from ecanet.ops.triton_jit import weight_gradient_kernel as kernel

    constexprs = _KERNELS["weight_gradient_kernel"]
    values = tuple(constexprs[n] for n in KernelLauncher(kernel)._constexpr_names)
    base = [torch.zeros(32) for _ in range(4)] + [17]
    for changed in ([torch.zeros(33)[1:], *base[1:]], [*base[:4], 1], [*base[:4], 32]):
        assert _triton_specialisation(kernel, tuple(changed), constexprs) != _triton_specialisation(
            kernel, tuple(base), constexprs
        )
        assert launch_key(0, values, (), tuple(changed)) != launch_key(0, values, (), tuple(base))
