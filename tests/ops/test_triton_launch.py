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


# BoundLaunch, driven on CPU tensors as if they were on GPU 0: Triton's launch is replaced by a
# recording stand-in, and what reaches the compiled kernel's launcher is recorded.
_REDUCE_OPTIONS = {"PRODUCT": False, "RELU": False, "SUBTRACT": False, "BLOCK_C": 8, "BLOCK_S": 16}
_REDUCE_SCALARS = (8, 49, 392, 49, 1, 1, 4, 0.5)


class _CompiledStandIn:
    function = 7
    packed_metadata = "metadata"

    def __init__(self):
        self.direct = []

    def run(self, *args):
        self.direct.append(args)


class _Hooks:
    launch_enter_hook = None
    launch_exit_hook = None


@pytest.fixture
def gpu_route(monkeypatch):
    """Launches through Triton are recorded (``through_triton``); kept kernels are one stand-in."""
    from ecanet.ops import triton_launch

    compiled, through_triton, hooks = _CompiledStandIn(), [], _Hooks()

    def compile_and_launch(plan, args):
        through_triton.append(args)
        return compiled

    monkeypatch.setattr(triton_launch, "_cuda_index", lambda t: 0)
    monkeypatch.setattr(triton_launch, "_one_device", lambda: True)
    monkeypatch.setattr(triton_launch, "_stream_of", lambda: lambda index: 99)
    monkeypatch.setattr(triton_launch, "_launch_hooks", lambda: hooks)
    monkeypatch.setattr(triton_launch, "_compile_and_launch", compile_and_launch)
    return compiled, through_triton, hooks


def _tensors(offset=0):
    return tuple(torch.zeros(64 + offset)[offset:] for _ in range(6))


def _bound_reduction():
    return KernelLauncher(channel_reduce_kernel).plan(4, _REDUCE_SCALARS, _REDUCE_OPTIONS).bound()


def test_a_bound_launch_keys_only_its_first_launch(gpu_route, monkeypatch):
    from ecanet.ops import triton_launch

    compiled, through_triton, _ = gpu_route
    launch = _bound_reduction()
    first = _tensors()
    launch(*first)
    assert len(through_triton) == 1 and through_triton[0][:6] == first and not compiled.direct

    def no_keys(*args):
        raise AssertionError("a bound launch keyed its arguments again")

    monkeypatch.setattr(triton_launch, "_key", no_keys)
    second = _tensors()
    launch(*second)
    values = tuple(_REDUCE_OPTIONS[name] for name in ("PRODUCT", "RELU", "SUBTRACT", "BLOCK_C", "BLOCK_S"))
    pointers = tuple(t.data_ptr() for t in second)
    assert compiled.direct == [(4, 1, 1, 99, 7, "metadata", None, None, None, *pointers, *_REDUCE_SCALARS, *values)]
    assert len(through_triton) == 1


def test_a_bound_launch_keys_an_unaligned_launch_in_full(gpu_route):
    compiled, through_triton, _ = gpu_route
    launch = _bound_reduction()
    launch(*_tensors())
    unaligned = (*_tensors()[:5], torch.zeros(65)[1:])  # 4 bytes past a 16-byte boundary
    launch(*unaligned)
    assert len(through_triton) == 2 and through_triton[1][5] is unaligned[5]  # another specialisation
    launch(*unaligned)  # kept under its full key by the planned launch: launched directly, as tensors
    assert compiled.direct[-1][9:15] == unaligned
    launch(*_tensors())
    assert isinstance(compiled.direct[-1][9], int)  # aligned again: the bound kernel


@pytest.mark.usefixtures("gpu_route")
def test_a_bound_launch_keeps_no_kernel_from_an_unaligned_first_launch(monkeypatch):
    from ecanet.ops import triton_launch

    launch = _bound_reduction()
    launch(*_tensors(1))
    aligned_key_parts = []
    monkeypatch.setattr(triton_launch, "_key", lambda *args: aligned_key_parts.append(args) or ("aligned",))
    launch(*_tensors())
    assert len(aligned_key_parts) == 1  # keyed in full: the unaligned kernel was not kept for it
    launch(*_tensors())
    assert len(aligned_key_parts) == 1


def test_a_bound_launch_goes_through_triton_while_a_hook_listens(gpu_route):
    compiled, through_triton, hooks = gpu_route
    launch = _bound_reduction()
    launch(*_tensors())
    hooks.launch_enter_hook = print
    launch(*_tensors())
    assert len(through_triton) == 2 and not compiled.direct
