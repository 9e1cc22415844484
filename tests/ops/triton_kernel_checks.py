"""Checks of the Triton kernels, run by ``test_triton_kernels.py`` in a fresh process.

Not collected by a plain ``pytest`` run (the name does not start with ``test_``). With
``ECANET_TRITON_DEVICE=cpu`` (the default) the kernels run on CPU tensors in Triton's interpreter,
which must be switched on before Triton is first imported (this module does so on its first
lines); with ``ECANET_TRITON_DEVICE=cuda`` they are compiled and run on the GPU.
"""

import copy
import functools
import os

os.environ["TRITON_INTERPRET"] = "1" if os.environ.get("ECANET_TRITON_DEVICE", "cpu") == "cpu" else "0"

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from batchnorm_statistics import with_random_statistics
from ecanet import add_eca
from ecanet.layers import ECA
from ecanet.models import create_model
from ecanet.ops import cpu_kernels, dispatch, prepared_calls, triton_kernels
from ecanet.ops.frozen_norm import FrozenNorm
from ecanet.ops.function import fused_eca_function, records_graph
from ecanet.ops.triton_backend import TritonKernels
from ecanet.ops.views import channel_view
from ecanet.retrofit.wrappers import ECAAfter
from folded_norms import folded_norm_calls
from kernel_cases import DEVICE, LAYOUTS, TOLERANCES, random_tensor
from reference import eca_reference


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize(("residual", "inplace"), [(False, False), (False, True), (True, False), (True, True)])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_forward_and_backward_match_reference(layout, residual, inplace, dtype):
    shape, memory_format, channel_dim = LAYOUTS[layout]
    tolerance = TOLERANCES[dtype]
    x = random_tensor(shape, dtype, memory_format)
    identity = random_tensor(shape, dtype, memory_format)
    weight = random_tensor((1, 1, 3), torch.float64)
    grad = random_tensor(shape, torch.float64)

    x_ref = x.double().clone().requires_grad_()
    id_ref = identity.double().clone().requires_grad_()
    w_ref = weight.clone().requires_grad_()
    expected = eca_reference(x_ref, w_ref, channel_dim=channel_dim)
    if residual:
        expected = torch.clamp(expected + id_ref, min=0)
    expected.backward(grad)

    source = x.clone().requires_grad_()
    kernel = weight.to(dtype).requires_grad_()
    shortcut = identity.clone().requires_grad_() if residual else None
    out = fused_eca_function(
        source * 1.0, kernel, shortcut, residual, inplace, "zeros", "sigmoid", channel_dim, TritonKernels()
    )
    out.backward(grad.to(dtype))
    torch.testing.assert_close(out.double(), expected, **tolerance)
    torch.testing.assert_close(source.grad.double(), x_ref.grad, **tolerance)
    torch.testing.assert_close(kernel.grad.double(), w_ref.grad, rtol=tolerance["rtol"], atol=1e-4)
    if residual:
        torch.testing.assert_close(shortcut.grad.double(), id_ref.grad, **tolerance)


@pytest.mark.parametrize("k", [1, 3, 5, 9])
@pytest.mark.parametrize("padding", ["zeros", "circular"])
@pytest.mark.parametrize("gate", ["sigmoid", "hard_sigmoid"])
@pytest.mark.parametrize("per_channel", [False, True])
def test_gate_inside_the_rescale_matches_reference(k, padding, gate, per_channel):
    # 12 channels in 2 channels-last samples of 4x5: the taps cross channel-block edges and wrap.
    x = random_tensor((2, 12, 4, 5), torch.float32, torch.channels_last)
    weight = random_tensor((12 if per_channel else 1, 1, k), torch.float32)
    out = torch.full_like(x, float("nan"))
    shape = triton_kernels.geometry(x, 1, out)
    _, gates = triton_kernels.eca_forward(shape, x, weight, None, False, padding, gate, out)
    expected = eca_reference(x.double(), weight.double(), padding=padding, gate=gate)
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-5)
    ones = torch.ones_like(x, dtype=torch.float64)
    descriptor = x.double().mean((2, 3))
    expected_gates = eca_reference(ones, weight.double(), padding=padding, gate=gate, descriptor=descriptor)
    torch.testing.assert_close(gates.double(), expected_gates[:, :, 0, 0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("k", [1, 3, 5, 7, 9])
@pytest.mark.parametrize("padding", ["zeros", "circular"])
@pytest.mark.parametrize("gate", ["sigmoid", "hard_sigmoid"])
@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("inplace", [False, True])
@pytest.mark.parametrize("input_grad", [True, False])
def test_gate_backward_matches_reference(k, padding, gate, per_channel, inplace, input_grad):
    # float64 on 2 channels-last samples of 9 channels: gradients through every tap, both paddings;
    # inside the input-gradient pass, or alone when only the kernel needs a gradient.
    x = random_tensor((2, 9, 3, 4), torch.float64, torch.channels_last)
    weight = random_tensor((9 if per_channel else 1, 1, k), torch.float64)
    grad = random_tensor((2, 9, 3, 4), torch.float64, torch.channels_last)
    x_ref, w_ref = x.clone().requires_grad_(), weight.clone().requires_grad_()
    eca_reference(x_ref, w_ref, padding=padding, gate=gate).backward(grad)
    source, kernel = x.clone().requires_grad_(input_grad), weight.clone().requires_grad_()
    out = fused_eca_function(source * 1.0, kernel, None, False, inplace, padding, gate, 1, TritonKernels())
    out.backward(grad)
    if input_grad:
        torch.testing.assert_close(source.grad, x_ref.grad, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(kernel.grad, w_ref.grad, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("layout", ["channels-first", "channels-last", "split-positions"])
def test_half_precision_forward_and_backward(dtype, layout):
    shape, memory_format, channel_dim = LAYOUTS[layout]
    x = random_tensor(shape, dtype, memory_format)
    weight = random_tensor((1, 1, 3), torch.float32)
    grad = random_tensor(shape, dtype, memory_format)
    x_ref = x.double().requires_grad_()
    w_ref = weight.double().requires_grad_()
    expected = eca_reference(x_ref, w_ref, channel_dim=channel_dim)
    expected.backward(grad.double())
    source = x.clone().requires_grad_()
    kernel = weight.clone().requires_grad_()
    out = fused_eca_function(source, kernel, None, False, False, "zeros", "sigmoid", channel_dim, TritonKernels())
    out.backward(grad)
    assert out.dtype == dtype and source.grad.dtype == dtype
    torch.testing.assert_close(out.double(), expected, **TOLERANCES[dtype])
    torch.testing.assert_close(source.grad.double(), x_ref.grad, **TOLERANCES[dtype])
    torch.testing.assert_close(kernel.grad.double(), w_ref.grad, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("layout", ["split-positions", "split-positions-channels-last"])
def test_split_layouts_split_their_reductions(layout):
    # The checks above cover the partial-sum path only if these layouts do split, on the device
    # running them and, checked on CPU too, on a GPU.
    shape, memory_format, channel_dim = LAYOUTS[layout]
    x = random_tensor(shape, torch.float32, memory_format)
    shape = triton_kernels.geometry(x, channel_dim)
    for policy in (triton_kernels._split_policy(x.device), triton_kernels.gpu_split_policy(132)):  # an H100's
        assert triton_kernels._reduction_plan(shape, policy).splits > 1, policy


@pytest.mark.parametrize(
    "layout", ["channels-first", "channels-last", "split-positions", "split-positions-channels-last"]
)
def test_reductions_write_every_channel(layout):
    shape, memory_format, channel_dim = LAYOUTS[layout]
    x = random_tensor(shape, torch.float32, memory_format)
    x3 = channel_view(x, channel_dim)
    expected = x3.double().sum(2)
    mean = triton_kernels.channel_mean(x, channel_dim)
    torch.testing.assert_close(mean.double(), expected / x3.shape[2], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "layout", ["channels-first", "channels-last", "split-positions", "split-positions-channels-last"]
)
def test_gate_gradient_reduction_masks_and_subtracts(layout):
    # After an in-place tail the reduction sums relu-masked grad * (output - shortcut).
    shape, memory_format, channel_dim = LAYOUTS[layout]
    grad3, out3, identity3 = (
        channel_view(random_tensor(shape, torch.float32, memory_format), channel_dim) for _ in range(3)
    )
    masked = torch.full_like(grad3, float("nan"))
    policy = triton_kernels._split_policy(grad3.device)
    reduction = triton_kernels._reduction(triton_kernels.geometry(grad3, 1), policy, True, True, True, 1.0, None)
    sums = reduction(grad3, out3, out3, masked, identity3)
    masked_expected = torch.where(out3 > 0, grad3, torch.zeros_like(grad3))
    torch.testing.assert_close(masked, masked_expected, rtol=0, atol=0)
    expected = (masked_expected.double() * (out3.double() - identity3.double())).sum(2)
    torch.testing.assert_close(sums.double(), expected, rtol=1e-5, atol=1e-4)


def test_sums_accumulate_half_precision_in_float32():
    # 4096 values of 1 + 2^-7: a bfloat16 running sum would stall far below the true total.
    x = torch.full((1, 2, 4096), 1.0 + 2.0**-7, dtype=torch.bfloat16, device=DEVICE)
    mean = triton_kernels.channel_mean(x, 1)
    assert mean.dtype == torch.float32
    torch.testing.assert_close(mean.cpu(), torch.full((1, 2), 1.0 + 2.0**-7), rtol=1e-6, atol=0)


def test_empty_batch_launches_nothing():
    x = torch.empty(0, 4, 3, 3, device=DEVICE)
    assert triton_kernels.channel_mean(x, 1).shape == (0, 4)
    out = torch.empty_like(x)
    weight = torch.ones(1, 1, 3, device=DEVICE)
    shape = triton_kernels.geometry(x, 1)
    mean, gates = triton_kernels.eca_forward(shape, x, weight, None, False, "zeros", "sigmoid", out)
    assert mean.shape == gates.shape == (0, 4)


@pytest.mark.parametrize("layout", ["channels-first", "channels-last", "channel-blocks-channels-last"])
def test_forward_without_a_kept_gate_writes_the_same_result(layout):
    shape, memory_format, channel_dim = LAYOUTS[layout]
    x, identity = random_tensor(shape, torch.float32, memory_format), random_tensor(shape, torch.float32, memory_format)
    weight = random_tensor((1, 1, 5), torch.float32)
    geometry = triton_kernels.geometry(x, channel_dim)
    results = []
    for keep_gate in (True, False):
        out = torch.empty_like(x)
        _, gates = triton_kernels.eca_forward(
            geometry, x, weight, identity, True, "zeros", "sigmoid", out, keep_gate=keep_gate
        )
        assert (gates is not None) == keep_gate
        results.append(out)
    torch.testing.assert_close(results[1], results[0], rtol=0, atol=0)
    expected = torch.relu(eca_reference(x.double(), weight.double(), channel_dim=channel_dim) + identity.double())
    torch.testing.assert_close(results[1].double(), expected, **TOLERANCES[torch.float32])


def _frozen_norm(channels: int, dtype: torch.dtype = torch.float32, eps: float = 2.0**-10) -> FrozenNorm:
    """An eval-mode BatchNorm's tensors: random statistics (variances 0.5 to 2) and affine; the
    default eps is one that float32 holds exactly."""
    variance = (torch.rand(channels, dtype=torch.float64) * 1.5 + 0.5).to(DEVICE, dtype)
    mean, weight, bias = (random_tensor((channels,), dtype) for _ in range(3))
    return FrozenNorm(mean, variance, weight, bias, eps)


def _normalized(x: torch.Tensor, norm: FrozenNorm, channel_dim: int) -> torch.Tensor:
    """``norm(x)`` in float64, as ``nn.BatchNorm`` computes it in eval mode."""
    shape = [1] * x.dim()
    shape[channel_dim] = -1
    mean, variance, weight, bias = (t.double().reshape(shape) for t in norm[:4])
    return (x.double() - mean) / torch.sqrt(variance + norm.eps) * weight + bias


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
@pytest.mark.parametrize(
    ("residual", "inplace", "k", "padding", "gate", "per_channel", "eps"),
    [(True, True, 3, "zeros", "sigmoid", False, 0.0), (False, False, 5, "circular", "hard_sigmoid", True, 2.0**-10)],
)
def test_rescale_through_a_frozen_norm_matches_reference(
    layout, dtype, residual, inplace, k, padding, gate, per_channel, eps
):
    # The norm's input and its mean go in; out is the ECA (tail) of norm(x). With eps = 0 the
    # padding channels' statistics must not divide zero by zero.
    shape, memory_format, channel_dim = LAYOUTS[layout]
    x, identity = random_tensor(shape, dtype, memory_format), random_tensor(shape, dtype, memory_format)
    channels = shape[channel_dim]
    weight = random_tensor((channels if per_channel else 1, 1, k), dtype)
    norm = _frozen_norm(channels, eps=eps)
    normalized = _normalized(x, norm, channel_dim)
    expected = eca_reference(normalized, weight.double(), padding=padding, gate=gate, channel_dim=channel_dim)
    if residual:
        expected = torch.relu(expected + identity.double())
    positions = [dim for dim in range(1, len(shape)) if dim != channel_dim % len(shape)]
    pooled = x.double().mean(positions)
    out = x if inplace else torch.full_like(x, float("nan"))
    geometry = triton_kernels.geometry(x, channel_dim)
    mean, _ = triton_kernels.eca_forward(
        geometry, x, weight, identity if residual else None, residual, padding, gate, out, None, False, norm
    )
    torch.testing.assert_close(out.double(), expected, **TOLERANCES[dtype])
    assert (out is x) == inplace
    torch.testing.assert_close(mean.double(), pooled, **TOLERANCES[dtype])  # x's, before the norm


def test_prepared_tail_applies_a_frozen_norm_with_grad_mode_off():
    x, identity = (random_tensor((2, 6, 3, 5), torch.float32, torch.channels_last) for _ in range(2))
    weight, norm = random_tensor((1, 1, 3), torch.float32), _frozen_norm(6)
    options = (weight, identity, None, True, True, "zeros", "sigmoid", 1)
    expected = torch.relu(eca_reference(_normalized(x, norm, 1), weight.double()) + identity.double())
    with torch.no_grad():
        assert prepared_calls.run(x, *options, norm) is None  # no call with this key was checked
        prepared_calls.remember(x, *options)
        assert prepared_calls.run(x, *options, _frozen_norm(5)) is None  # the norm is for other channels
        assert prepared_calls.run(x, *options, norm._replace(bias=norm.bias.double()[::2])) is None  # not dense
    assert prepared_calls.run(x, *options, norm) is None  # grad mode on: the norm's parameters may want gradients
    with torch.no_grad():
        version = x._version
        out = prepared_calls.run(x, *options, norm)
    assert out is x and x._version == version + 1
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-5)


_PLANNERS = (
    "forward_plan",
    "backward_plan",
    "training_plans",
    "_reduction",
    "_reduction_plan",
    "_affine_launch",
    "_affine_plan",
    "geometry",
)
"""What works out tiles, grids and constexprs: a stored call needs none of it again."""


@pytest.mark.parametrize("folded", [False, True])
@pytest.mark.parametrize("descriptor", [False, True])
def test_prepared_inference_call_plans_nothing_again(monkeypatch, folded, descriptor):
    # Tiles, grids and constexprs are planned when the call is stored: a later call only launches.
    x, identity = (random_tensor((2, 6, 3, 5), torch.float32, torch.channels_last) for _ in range(2))
    weight, norm = random_tensor((1, 1, 3), torch.float32), _frozen_norm(6) if folded else None
    normalized = _normalized(x, norm, 1) if folded else x.double()
    mean = x.double().mean((2, 3)).float() if descriptor else None  # with a norm, its input's mean
    options = (weight, identity, mean, True, False, "zeros", "sigmoid", 1)
    with torch.no_grad():
        prepared_calls.remember(x, *options)
        for planner in _PLANNERS:
            monkeypatch.setattr(triton_kernels, planner, None)
        out = prepared_calls.run(x, *options, norm)
    expected = torch.relu(eca_reference(normalized, weight.double()) + identity.double())
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-5)


def test_prepared_call_repeats_a_checked_call():
    x = random_tensor((2, 6, 3, 5), torch.float32, torch.channels_last)
    weight = random_tensor((1, 1, 3), torch.float32)
    options = (weight, None, None, False, False, "zeros", "sigmoid", 1)
    assert prepared_calls.run(x, *options) is None  # no call with this key was checked
    prepared_calls.remember(x, *options)
    out = prepared_calls.run(x, *options)
    assert out is not x and out.stride() == x.stride()
    torch.testing.assert_close(out.double(), eca_reference(x.double(), weight.double()), rtol=1e-5, atol=1e-5)
    assert prepared_calls.run(x.contiguous(), *options) is None  # another layout, another key


def test_prepared_in_place_tail_counts_its_write():
    shape = (2, 6, 3, 5)
    x, identity = random_tensor(shape, torch.float32), random_tensor(shape, torch.float32)
    weight = random_tensor((1, 1, 3), torch.float32)
    descriptor = x.double().mean((2, 3)).float()
    options = (weight, identity, descriptor, True, True, "circular", "hard_sigmoid", 1)
    prepared_calls.remember(x, *options)
    gated = eca_reference(x.double(), weight.double(), padding="circular", gate="hard_sigmoid")
    expected = torch.relu(gated + identity)
    version = x._version
    out = prepared_calls.run(x, *options)
    assert out is x and x._version == version + 1
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-5)
    with torch.inference_mode():
        frozen = x.clone()
    assert prepared_calls.run(frozen, *options) is None  # in place on an inference tensor: ATen's error


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("residual", [False, True])
def test_prepared_training_call_matches_reference(monkeypatch, layout, residual):
    # A call that records a graph runs the fused Function with the launches planned when the call
    # was stored, in its forward and its backward (nothing is planned again): the output gradient
    # (contiguous, so another layout than a channels-last input's) is laid out like the input first.
    shape, memory_format, channel_dim = LAYOUTS[layout]
    source = random_tensor(shape, torch.float32, memory_format).requires_grad_()
    weight = random_tensor((1, 1, 3), torch.float32).requires_grad_()
    shortcut = random_tensor(shape, torch.float32, memory_format).requires_grad_() if residual else None
    grad = random_tensor(shape, torch.float64)
    options = (weight, shortcut, None, residual, residual, "zeros", "sigmoid", channel_dim)
    branch = source * 1.0
    assert prepared_calls.run(branch, *options) is None  # no call with this key was checked
    prepared_calls.remember(branch, *options)
    for planner in _PLANNERS:
        monkeypatch.setattr(triton_kernels, planner, None)
    out = prepared_calls.run(branch, *options)
    assert out.grad_fn is not None and (out is branch) == residual  # a tail overwrites its branch
    out.backward(grad.float())

    x_ref, w_ref = source.detach().double().requires_grad_(), weight.detach().double().requires_grad_()
    expected = eca_reference(x_ref, w_ref, channel_dim=channel_dim)
    if residual:
        id_ref = shortcut.detach().double().requires_grad_()
        expected = torch.relu(expected + id_ref)
    expected.backward(grad)
    tolerance = TOLERANCES[torch.float32]
    torch.testing.assert_close(out.double(), expected, **tolerance)
    torch.testing.assert_close(source.grad.double(), x_ref.grad, **tolerance)
    torch.testing.assert_close(weight.grad.double(), w_ref.grad, rtol=1e-5, atol=1e-4)
    if residual:
        torch.testing.assert_close(shortcut.grad.double(), id_ref.grad, **tolerance)


def test_prepared_training_tail_leaves_a_leaf_input_intact():
    # Overwriting a leaf that requires grad would lose the values its gradient needs: the result
    # goes to a new tensor, as on the checked path.
    shape = (2, 6, 3, 5)
    x = random_tensor(shape, torch.float32).requires_grad_()
    identity = random_tensor(shape, torch.float32)
    weight = random_tensor((1, 1, 3), torch.float32)
    options = (weight, identity, None, True, True, "zeros", "sigmoid", 1)
    prepared_calls.remember(x, *options)
    before = x.detach().clone()
    out = prepared_calls.run(x, *options)
    assert out is not x and torch.equal(x.detach(), before)
    out.sum().backward()
    x_ref = before.double().requires_grad_()
    torch.relu(eca_reference(x_ref, weight.double()) + identity.double()).sum().backward()
    torch.testing.assert_close(x.grad.double(), x_ref.grad, **TOLERANCES[torch.float32])


_CALL_LAYOUTS = {
    "channels-first": ((2, 6, 3, 5), torch.contiguous_format, 1),
    "channels-last": ((2, 6, 3, 5), torch.channels_last, 1),
    "tokens": ((2, 7, 6), torch.contiguous_format, -1),
}


def _call_tensors(seed, layout, source, shortcut, weight_grad):
    """Fresh tensors for one call, equal for equal arguments: ``(x, weight, identity, leaves)``.

    ``source``: ``x`` is an intermediate result, a leaf that requires grad, a constant, or an
    inference tensor. ``shortcut``: no identity, one with memory of its own, or ``x``'s own memory.
    """
    shape, memory_format, _ = _CALL_LAYOUTS[layout]
    generator = torch.Generator().manual_seed(seed)

    def draw(*size):
        values = torch.randn(size or shape, generator=generator, dtype=torch.float64)
        return values.to(DEVICE, torch.float32).contiguous(
            memory_format=torch.contiguous_format if size else memory_format
        )

    values, leaves = draw(), []
    if source == "intermediate":
        leaves.append(values.requires_grad_())
        x = values * 1.0
    elif source == "leaf":
        x = values.requires_grad_()
        leaves.append(x)
    elif source == "inference":
        with torch.inference_mode():
            x = values.clone()
    else:
        x = values
    weight = draw(1, 1, 3).requires_grad_(weight_grad)
    if weight_grad:
        leaves.append(weight)
    identity = None
    if shortcut == "own":
        identity = draw().requires_grad_()
        leaves.append(identity)
    elif shortcut == "shared":
        identity = x.detach()
    return x, weight, identity, leaves


def _outcome(run, tensors, grad):
    """What a call did: ``None`` (declined), the error it raised, or its result, whether it wrote
    into ``x``, the version counts and, when it recorded a graph, the leaves' gradients."""
    x, _, _, leaves = tensors
    version = None if x.is_inference() else x._version
    try:
        out = run(*tensors[:3])
    except (RuntimeError, ValueError) as error:
        return type(error), str(error)
    if out is None:
        return None
    outcome = {
        "out": out.detach().clone(),
        "in place": out is x,
        "writes": None if version is None else x._version - version,
        "graph": out.grad_fn is not None,
    }
    if out.grad_fn is not None:
        out.backward(grad)
        outcome["gradients"] = [leaf.grad for leaf in leaves]
    return outcome


@settings(max_examples=60, deadline=None)
@given(
    layout=st.sampled_from(list(_CALL_LAYOUTS)),
    source=st.sampled_from(["intermediate", "leaf", "constant", "inference"]),
    shortcut=st.sampled_from(["none", "own", "shared"]),
    weight_grad=st.booleans(),
    grad_mode=st.booleans(),
    relu=st.booleans(),
    inplace=st.booleans(),
    stored_in_training=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_prepared_calls_behave_like_checked_calls(
    layout, source, shortcut, weight_grad, grad_mode, relu, inplace, stored_in_training, seed
):
    # A well-behaved call (training or not) stores its key; a later call with the same key but
    # other per-call properties (grad mode, a leaf, an inference tensor, a shortcut sharing x's
    # memory, which tensors require grad) must do through the prepared path exactly what the
    # checked path does with it.
    channel_dim = _CALL_LAYOUTS[layout][2]
    options = (relu, inplace, "zeros", "sigmoid", channel_dim)

    def checked(x, weight, identity):
        return dispatch.fast_eca(x, weight, identity, *options)

    def prepared(x, weight, identity):
        return prepared_calls.run(x, weight, identity, None, *options)

    call = (seed, layout, source, shortcut, weight_grad)
    grad = torch.randn(_CALL_LAYOUTS[layout][0], generator=torch.Generator().manual_seed(seed)).to(DEVICE)
    with pytest.MonkeyPatch.context() as patch, torch.set_grad_enabled(grad_mode):
        patch.setattr(dispatch, "kernels_for", lambda x: dispatch._triton_backend())
        patch.setattr(prepared_calls, "_prepared", {})
        graph = records_graph(*_call_tensors(*call)[:3])
        stored = "intermediate" if stored_in_training else "constant"
        first_call = _call_tensors(seed, layout, stored, shortcut.replace("shared", "own"), False)
        assert checked(*first_call[:3]) is not None and len(prepared_calls._prepared) == 1
        expected = _outcome(checked, _call_tensors(*call), grad)
        got = _outcome(prepared, _call_tensors(*call), grad)
    if got is None:  # declined: the caller takes the checked path, which raises ATen's error here
        assert inplace and not graph and source == "inference"
        return
    if expected is None or isinstance(expected, tuple):
        assert got == expected
        return
    assert got.keys() == expected.keys()
    for name, value in expected.items():
        if isinstance(value, torch.Tensor):
            torch.testing.assert_close(got[name], value, rtol=0, atol=0)
        elif name == "gradients":
            for got_grad, expected_grad in zip(got[name], value, strict=True):
                assert (got_grad is None) == (expected_grad is None)
                if expected_grad is not None:
                    torch.testing.assert_close(got_grad, expected_grad, rtol=0, atol=0)
        else:
            assert got[name] == value, name


def test_launcher_keeps_compiled_kernels_for_gpu_launches_only():
    # On CPU tensors every launch goes through Triton's interpreter; on the GPU a key's compiled
    # kernel is kept after its first launch and launched directly from then on.
    launcher = triton_kernels._launcher("channel_reduce_kernel")
    x3 = random_tensor((2, 3, 4), torch.float32)
    for _ in range(2):
        torch.testing.assert_close(triton_kernels.channel_mean(x3, 1), x3.mean(2))
    assert repr(launcher) == "KernelLauncher(channel_reduce_kernel)"
    assert (len(launcher._compiled) == 0) if DEVICE == "cpu" else (len(launcher._compiled) >= 1)


def _triton_everywhere(monkeypatch):
    """Sends CPU tensors to the Triton backend too (interpreted), past the compiled extension's
    one-step calls; CUDA tensors take it anyway."""
    if DEVICE == "cpu":
        monkeypatch.setattr(dispatch, "kernels_for", lambda x: dispatch._triton_backend())
        monkeypatch.setattr(cpu_kernels, "entry", lambda name: None)


def _prepared_everywhere(monkeypatch):
    """Also sends CPU tensors down the prepared-call path that CUDA tensors take (interpreted)."""
    _triton_everywhere(monkeypatch)
    if DEVICE == "cpu":
        monkeypatch.setattr(dispatch, "takes_prepared_calls", lambda x: True)


def _last_convolution(block: torch.nn.Module) -> torch.nn.Module:
    """The convolution whose output a block's last BatchNorm normalizes."""
    if isinstance(getattr(block, "conv", None), torch.nn.Sequential):  # MobileNetV2: projection, BatchNorm, ECA
        return block.conv[-3]
    return block.conv3 if hasattr(block, "conv3") else block.conv2


@pytest.mark.parametrize(
    ("name", "kwargs"), [("eca_resnet18", {"width": 8}), ("eca_mobilenet_v2", {"width_mult": 0.25})]
)
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_network_inference_folds_each_blocks_last_batchnorm(monkeypatch, name, kwargs, memory_format):
    # The whole route a GPU takes: in the first forward each block whose layout is new runs the
    # checked path (its last BatchNorm a module); in the second every block's call is prepared,
    # with that BatchNorm inside the rescale (MobileNetV2's blocks without a shortcut too). float64
    # throughout, against the plain operators. A forward hook anywhere, or on the ECA layers alone,
    # keeps every BatchNorm a module.
    torch.manual_seed(0)
    model = with_random_statistics(create_model(name, num_classes=10, small_input=True, **kwargs)).eval()
    model = model.to(DEVICE, torch.float64, memory_format=memory_format)
    # 32 px: the last maps are 2x2 (at 1x1 channels-first and channels-last strides coincide, and a
    # BatchNorm may return the other one, so its input's layout is not the one prepared).
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64).to(DEVICE, memory_format=memory_format)
    blocks = sum(1 for module in model.modules() if isinstance(getattr(module, "eca", None), ECA))
    with torch.no_grad():
        with monkeypatch.context() as plain:
            plain.setattr(dispatch, "use_plain_operators", lambda: True)
            expected = model(x)
        _prepared_everywhere(monkeypatch)
        folded = folded_norm_calls(monkeypatch)
        checked = model(x)  # a block whose layout an earlier block had is prepared already
        assert folded.count(True) < blocks, folded
        folded.clear()
        prepared = model(x)
        assert folded.count(True) == blocks > 0, folded
        folded.clear()
        hook = torch.nn.modules.module.register_module_forward_hook(lambda module, args, out: None)
        try:
            hooked = model(x)
        finally:
            hook.remove()
        assert not any(folded)
        seen = []  # hooks on the ECA layers alone: each must see its layer run, so none is folded
        layers = [module for module in model.modules() if isinstance(module, ECA)]
        hooks = [layer.register_forward_hook(lambda module, args, out: seen.append(module)) for layer in layers]
        try:
            eca_hooked = model(x)
        finally:
            for hook in hooks:
                hook.remove()
        assert not any(folded) and seen == layers
        # Hooks that keep each block's last convolution output: the norm still folds (from the
        # second forward, whose calls are prepared), into a new tensor, so what they keep stays.
        kept = []
        hooks = [
            _last_convolution(block).register_forward_hook(lambda module, args, out: kept.append((out, out.clone())))
            for block in model.modules()
            if isinstance(getattr(block, "eca", None), ECA)
        ]
        try:
            model(x)
            folded.clear()
            conv_hooked = model(x)
        finally:
            for hook in hooks:
                hook.remove()
        assert folded.count(True) == blocks, folded
        assert all(torch.equal(out, copy) for out, copy in kept)
    for got in (checked, prepared, hooked, eca_hooked, conv_hooked):
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("case", ["plain", "hooked", "inplace"])
def test_after_norm_folds_into_a_new_tensor_unless_a_hook_must_see_it(monkeypatch, case):
    # A call is prepared once one with its layout ran, and then applies the BatchNorm inside the
    # rescale, into a new tensor: never into y, also for an in-place layer (whose checked calls
    # store another key: here a twin that is not in place stored this one's first). A hook on the
    # layer must see it run, so it is never folded.
    torch.manual_seed(0)
    layer = ECA(6, inplace=case == "inplace").to(DEVICE, torch.float64)
    norm = with_random_statistics(torch.nn.BatchNorm2d(6)).eval().to(DEVICE, torch.float64)
    seen = []
    if case == "hooked":
        layer.register_forward_hook(lambda module, args, out: seen.append(out.shape))
    y = random_tensor((2, 6, 3, 5), torch.float64, torch.channels_last)
    before = y.clone()
    expected = eca_reference(norm(y), layer.conv.weight.detach().double())
    _prepared_everywhere(monkeypatch)
    with torch.no_grad():
        if case == "inplace":
            ECA(6).to(DEVICE, torch.float64).after_norm(y, norm)
        folded = folded_norm_calls(monkeypatch)
        outs = [layer.after_norm(y, norm) for _ in range(2)]
    assert folded == {"plain": [False, True], "hooked": [False, False], "inplace": [True, True]}[case]
    assert len(seen) == (2 if case == "hooked" else 0) and torch.equal(y, before)
    for out in outs:
        torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_retrofitted_torchvision_network_folds_each_wrapped_batchnorm(monkeypatch, memory_format):
    # add_eca wraps each block's last BatchNorm with ECA after it (ECAAfter); on the GPU's route the
    # second inference applies every one of them inside ECA's rescale.
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10)
    add_eca(model)
    model = with_random_statistics(model).eval().to(DEVICE, torch.float64, memory_format=memory_format)
    wrapped = sum(1 for module in model.modules() if isinstance(module, ECAAfter))
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64).to(DEVICE, memory_format=memory_format)
    with torch.no_grad():
        with monkeypatch.context() as plain:
            plain.setattr(dispatch, "use_plain_operators", lambda: True)
            expected = model(x)
        _prepared_everywhere(monkeypatch)
        model(x)
        folded = folded_norm_calls(monkeypatch)
        prepared = model(x)
    assert folded.count(True) == wrapped == 8, folded
    torch.testing.assert_close(prepared, expected, rtol=1e-10, atol=1e-10)


def _one_step(model, x: torch.Tensor, target: torch.Tensor, memory_format=torch.channels_last) -> None:
    """The loss's gradients of ``model`` (moved to :data:`DEVICE`) for one batch."""
    model = model.to(DEVICE, memory_format=memory_format)
    images = x.to(DEVICE, memory_format=memory_format)
    torch.nn.functional.cross_entropy(model(images), target.to(DEVICE)).backward()


def _network_and_batch(dtype):
    """ECA-ResNet-18 (k = 3, 5, 7, 7 by stage; BatchNorm in eval mode) in ``dtype``, and one batch."""
    torch.manual_seed(0)
    model = create_model("eca_resnet18", num_classes=10, small_input=True).eval().to(dtype)
    x, target = torch.randn(2, 3, 16, 16, dtype=torch.float64), torch.randint(0, 10, (2,))
    return model, x.to(dtype), target


def _relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    return ((got.cpu().double() - expected).norm() / expected.norm()).item()


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_network_gradients_match_float64(monkeypatch, memory_format):
    # The whole network in float64, so the comparison is well-conditioned: in float32, rounding
    # can put an activation within 1e-7 of zero on the other side of a ReLU, and that element's
    # gradient changes entirely (on an H200, one such ReLU in cuDNN's float32 forward moved
    # ECA-ResNet-18's gradients 0.2% from float64, ECA's own gradients being exact). float32
    # accuracy is checked call by call below, where no kink lies between the compared values.
    reference, x, target = _network_and_batch(torch.float64)
    model = copy.deepcopy(reference)
    torch.nn.functional.cross_entropy(reference(x), target).backward()  # ecanet's CPU kernels
    _triton_everywhere(monkeypatch)
    _one_step(model, x, target, memory_format)
    for (name, got), expected in zip(model.named_parameters(), reference.parameters(), strict=True):
        assert _relative_error(got.grad, expected.grad) <= 1e-9, name


def _record_fused_calls(monkeypatch) -> list[dict]:
    """Records each fused ECA call of a network: float64 copies of its inputs as its forward saw
    them (before any in-place write), its options, where its ReLU passed, and the gradients its
    backward received and gave."""
    calls = []
    original = dispatch.fused_eca_function

    def recording(route, x, weight, identity, relu, inplace, padding, gate, channel_dim, kernels):
        call = {
            "inputs": [None if t is None else t.detach().cpu().double() for t in (x, weight, identity)],
            "options": (relu, padding, gate, channel_dim),
            "route": route,
        }
        calls.append(call)
        out = original(x, weight, identity, relu, inplace, padding, gate, channel_dim, kernels)
        call["passed"] = (out > 0).cpu() if relu else None  # the kernel's own ReLU decisions

        def keep(grad_inputs, grad_outputs):
            call["gradients"] = [None if g is None else g.cpu().double() for g in grad_inputs]
            call["grad"] = grad_outputs[0].cpu().double()

        out.grad_fn.register_hook(keep)
        return out

    monkeypatch.setattr(dispatch, "fused_eca_function", functools.partial(recording, "checked"))
    monkeypatch.setattr(prepared_calls, "fused_eca_function", functools.partial(recording, "prepared"))
    return calls


def _call_reference_gradients(call: dict) -> list[torch.Tensor | None]:
    """A recorded call's input gradients, recomputed in float64 from its own inputs and output
    gradient, its ReLU passing where the kernel's did (a sum within rounding of zero may fall on
    either side; the gradients are compared on the same branch)."""
    x, weight, identity = (None if t is None else t.clone().requires_grad_() for t in call["inputs"])
    relu, padding, gate, channel_dim = call["options"]
    out = eca_reference(x, weight, padding=padding, gate=gate, channel_dim=channel_dim)
    if identity is not None:
        out = out + identity
    if relu:
        out = torch.where(call["passed"], out, 0.0)
    out.backward(call["grad"])
    return [x.grad, weight.grad, None if identity is None else identity.grad]


@pytest.mark.parametrize("prepared", [False, True], ids=["checked", "prepared"])
def test_each_network_call_gradients_match_float64(monkeypatch, prepared):
    # float32, channels-last: every ECA block tail of a network's training step against float64
    # computed from that call's own inputs and output gradient, so whatever the network around it
    # does (layouts, in-place writes, saved tensors, memory reused between calls) is in play.
    # Prepared: the second block of each stage repeats the first's key and skips the checks.
    model, x, target = _network_and_batch(torch.float32)
    _triton_everywhere(monkeypatch)
    monkeypatch.setattr(dispatch, "takes_prepared_calls", lambda x: prepared)
    monkeypatch.setattr(prepared_calls, "_prepared", {})  # no call of an earlier check counts as seen
    calls = _record_fused_calls(monkeypatch)
    _one_step(model, x, target)
    assert [call["route"] for call in calls] == ["checked", "prepared" if prepared else "checked"] * 4
    for index, call in enumerate(calls):
        for got, expected in zip(call["gradients"], _call_reference_gradients(call), strict=True):
            assert _relative_error(got, expected) <= 1e-5, index
