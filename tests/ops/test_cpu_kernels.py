"""The two CPU backends, the compiled kernels (:mod:`ecanet.ops.cpu_kernels`) and ``ComposedKernels(aten_kernels)``,
side by side against the plain float64 reference; the compiled operators' own checks; building and falling back.

Most checks drive a backend through :func:`ecanet.ops.function.fused_eca_function` (forward and
backward) or call its ``forward`` on :func:`ecanet.ops.views.channel_view` views directly (the
no-grad path), so every case runs on both backends whatever :func:`ecanet.ops.dispatch.kernels_for`
picks. The in-place safety checks also go through the public API (the default backend). The
fallbacks run in fresh processes, because :func:`ecanet.ops.cpu_kernels.available` is decided once
per process.
"""

import io
import itertools
import json
import math
import os
import resource
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from ecanet import ECA, twice_differentiable
from ecanet.functional import eca, eca_residual
from ecanet.ops import aten_kernels, cpu_kernels
from ecanet.ops.composed import ComposedKernels
from ecanet.ops.function import fused_eca_function
from ecanet.ops.views import channel_view
from intra_op_threads import intra_op_threads
from reference import eca_reference, eca_residual_reference

LAYOUTS = {  # shape, memory format, channel_dim; six channels everywhere, so [C, 1, k] weights fit all
    "1d": ((3, 6, 7), torch.contiguous_format, 1),
    "2d": ((2, 6, 4, 5), torch.contiguous_format, 1),
    "2d-channels-last": ((2, 6, 4, 5), torch.channels_last, 1),
    "3d": ((2, 6, 3, 2, 4), torch.contiguous_format, 1),
    "3d-channels-last": ((2, 6, 3, 2, 4), torch.channels_last_3d, 1),
    "tokens": ((3, 5, 6), torch.contiguous_format, -1),
}
CHANNELS = 6


@dataclass(frozen=True)
class Mode:
    """One way to call the fused function: what it computes and which inputs want gradients."""

    identity: bool = False
    relu: bool = False
    inplace: bool = False
    grads: frozenset[str] = frozenset({"x", "weight", "identity"})


MODES = {
    "layer": Mode(),
    "layer-in-place": Mode(inplace=True),
    "layer-relu-in-place": Mode(relu=True, inplace=True),
    "residual-relu": Mode(identity=True, relu=True),
    "residual-none": Mode(identity=True),
    "residual-relu-in-place": Mode(identity=True, relu=True, inplace=True),
    "residual-none-in-place": Mode(identity=True, inplace=True),
    "residual-relu-in-place-x-only": Mode(identity=True, relu=True, inplace=True, grads=frozenset({"x"})),
    "residual-relu-identity-frozen": Mode(identity=True, relu=True, grads=frozenset({"x", "weight"})),
    "residual-relu-identity-only": Mode(identity=True, relu=True, grads=frozenset({"identity"})),
    "weight-only": Mode(grads=frozenset({"weight"})),
    "weight-only-in-place": Mode(inplace=True, grads=frozenset({"weight"})),
    "x-only": Mode(grads=frozenset({"x"})),
    "residual-relu-x-only": Mode(identity=True, relu=True, grads=frozenset({"x"})),
}

# Relative to the largest reference value: a weight gradient sums over every element.
TOLERANCES = {torch.float64: 1e-10, torch.float32: 2e-5, torch.bfloat16: 2e-2, torch.float16: 4e-3}


@pytest.fixture(params=["compiled", "aten"])
def kernels(request):
    """Each CPU backend in turn; the compiled one must have built (as ``kernels_for`` expects)."""
    if request.param == "aten":
        return ComposedKernels(aten_kernels)
    assert cpu_kernels.available(), "the compiled CPU kernels did not build on this machine"
    return cpu_kernels


def _randn(shape, memory_format=torch.contiguous_format, dtype=torch.float64, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=generator, dtype=torch.float64).to(dtype=dtype, memory_format=memory_format)


def _like(x, seed):
    """Random values in ``x``'s dtype and memory layout."""
    return torch.empty_like(x).copy_(_randn(x.shape, seed=seed))


def _weight(rows=1, k=3, dtype=torch.float64, seed=1):
    # randn rather than the layer's small init, so the gate varies across channels and errors show.
    return _randn((rows, 1, k), dtype=dtype, seed=seed)


def _input(layout, dtype=torch.float64, seed=0):
    shape, memory_format, channel_dim = LAYOUTS[layout]
    return _randn(shape, memory_format, dtype, seed), channel_dim


def _assert_close(actual, expected, what, tolerance=None):
    tolerance = tolerance or TOLERANCES[actual.dtype]
    scale = max(expected.abs().max().item(), 1.0)
    torch.testing.assert_close(
        actual.double(), expected, rtol=tolerance, atol=tolerance * scale, msg=lambda message: f"{what}: {message}"
    )


def _check_against_reference(kernels, x, weight, mode, padding="zeros", gate="sigmoid", channel_dim=1, grad=None):
    """Runs ``fused_eca_function`` on the leaves ``x`` and ``weight`` (and an identity like ``x``) and
    the float64 reference on the same values; compares the output, its strides and every gradient
    (of ``grad``, random by default, flowing back from the output)."""
    leaves = {"x": x, "weight": weight, "identity": _like(x, seed=7) if mode.identity else None}
    references = {
        name: leaf.detach().to(torch.float64, copy=True).requires_grad_(name in mode.grads)
        for name, leaf in leaves.items()
        if leaf is not None
    }
    for name, leaf in leaves.items():
        if leaf is not None:
            leaf.requires_grad_(name in mode.grads)
    strides = x.stride()
    source = x.clone() if mode.inplace and x.requires_grad else x  # in place needs a non-leaf to overwrite
    out = fused_eca_function(
        source, weight, leaves["identity"], mode.relu, mode.inplace, padding, gate, channel_dim, kernels
    )

    expected = eca_reference(references["x"], references["weight"], padding, "avg", gate, channel_dim)
    if mode.identity:
        expected = expected + references["identity"]
    if mode.relu:
        expected = expected.clamp(min=0)
    assert out.dtype == x.dtype and out.shape == x.shape and out.stride() == strides
    # A half-precision tail keeps x for its backward (see test_half_tail_keeps_x_...).
    half_tail = mode.identity and x.dtype in (torch.float16, torch.bfloat16) and torch.is_grad_enabled()
    assert (out is source) == (mode.inplace and not half_tail)
    tolerance = TOLERANCES[x.dtype]  # a float32 weight next to a half x does not make the result float32
    _assert_close(out, expected, "output", tolerance)

    # Contiguous: for channels-last outputs the backward first copies it into their layout.
    grad = _randn(x.shape, dtype=x.dtype, seed=11) if grad is None else grad
    out.backward(grad)
    expected.backward(grad.double())
    # PyTorch's CPU hardsigmoid_backward multiplies by 1.0f / 6.0f, a float32 constant, even for
    # float64: the ATen backend's float64 gradients through that gate are good to ~3e-8 only.
    rounded_sixth = gate == "hard_sigmoid" and isinstance(kernels, ComposedKernels) and x.dtype == torch.float64
    for name, leaf in leaves.items():
        if leaf is None:
            continue
        if name in mode.grads:
            _assert_close(leaf.grad, references[name].grad, f"gradient of {name}", 1e-7 if rounded_sixth else tolerance)
        elif leaf.is_leaf:  # in place, x without a gradient became the output
            assert leaf.grad is None, name


# ---------------------------------------------------------------------------------------------
# Forward and backward through the fused Function, on both backends.


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("mode", list(MODES))
def test_every_layout_and_mode_matches_reference(kernels, layout, mode):
    x, channel_dim = _input(layout)
    _check_against_reference(kernels, x, _weight(CHANNELS, k=5), MODES[mode], "circular", "sigmoid", channel_dim)


# Every combination of the gate's options; layout and mode rotate through the list alongside.
OPTIONS = [
    (layout, mode, padding, gate, rows, k)
    for (padding, gate, rows, k), layout, mode in zip(
        itertools.product(["zeros", "circular"], ["sigmoid", "hard_sigmoid"], [1, CHANNELS], [1, 3, 5, 7]),
        itertools.cycle(LAYOUTS),
        itertools.cycle(["residual-relu", "layer-in-place", "layer", "residual-relu-in-place", "weight-only"]),
        strict=False,
    )
]


@pytest.mark.parametrize(
    ("layout", "mode", "padding", "gate", "rows", "k"), OPTIONS, ids=["-".join(map(str, case)) for case in OPTIONS]
)
def test_every_gate_option_matches_reference(kernels, layout, mode, padding, gate, rows, k):
    x, channel_dim = _input(layout)
    _check_against_reference(kernels, x, _weight(rows, k), MODES[mode], padding, gate, channel_dim)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("layout", ["2d", "2d-channels-last", "tokens"])
@pytest.mark.parametrize("mode", ["layer", "layer-in-place", "residual-relu", "residual-relu-in-place"])
def test_every_dtype_matches_reference_with_its_rounded_weight(kernels, dtype, layout, mode):
    x, channel_dim = _input(layout, dtype)
    _check_against_reference(kernels, x, _weight(k=3, dtype=dtype), MODES[mode], "zeros", "sigmoid", channel_dim)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("layout", ["2d-channels-last", "3d"])
def test_half_input_with_a_float32_weight(kernels, dtype, layout):
    x, channel_dim = _input(layout, dtype)
    weight = _weight(CHANNELS, k=3, dtype=torch.float32)
    _check_against_reference(kernels, x, weight, MODES["residual-relu"], "circular", "hard_sigmoid", channel_dim)


DEGENERATE = {  # shape, memory format, channel_dim, padding, rows, k
    "S=1": ((3, 6, 1, 1), torch.contiguous_format, 1, "zeros", 1, 3),
    "S=1-channels-last": ((3, 6, 1, 1), torch.channels_last, 1, "circular", 6, 3),
    "C=1": ((3, 1, 4, 4), torch.contiguous_format, 1, "circular", 1, 3),
    "C=1-channels-last": ((3, 1, 4, 4), torch.channels_last, 1, "zeros", 1, 5),
    "C=1-S=1": ((4, 1, 1), torch.contiguous_format, 1, "zeros", 1, 5),
    "N=1": ((1, 6, 4, 5), torch.channels_last, 1, "zeros", 6, 5),
    "C<k-zeros": ((2, 2, 3, 3), torch.contiguous_format, 1, "zeros", 2, 7),
    "C<k-circular": ((2, 3, 3, 3), torch.channels_last, 1, "circular", 1, 7),  # k // 2 == C: wraps fully
    "C=2048-channels-last": ((2, 2048, 2, 2), torch.channels_last, 1, "circular", 1, 7),
    "C=300-channels-last": ((2, 300, 3, 1), torch.channels_last, 1, "zeros", 300, 5),
    "C=2100-channels-last": ((2, 2100, 2, 1), torch.channels_last, 1, "zeros", 1, 3),  # a partial channel block
    # One sample, more channels than one task sums: on two threads its channels split into blocks.
    "C=2100-one-sample": ((1, 2100, 4, 4), torch.channels_last, 1, "zeros", 1, 3),
    # Past the kernels' parallel grain (32768 elements): rows and channel blocks split into tasks.
    "large-S": ((2, 4, 72, 72), torch.contiguous_format, 1, "zeros", 1, 3),
    "large-S-tokens": ((2, 4000, 5), torch.contiguous_format, -1, "circular", 5, 3),
}
# The float64 reference loops over channels in Python: C=2048 and C=2100 run in one mode only.
DEGENERATE_CASES = [
    (case, mode)
    for case, mode in itertools.product(DEGENERATE, ["residual-relu", "residual-relu-in-place", "layer-in-place"])
    if not case.startswith(("C=2048", "C=2100")) or mode == "residual-relu-in-place"
]


@pytest.mark.parametrize(("case", "mode"), DEGENERATE_CASES)
def test_degenerate_shapes_match_reference(kernels, case, mode):
    shape, memory_format, channel_dim, padding, rows, k = DEGENERATE[case]
    x = _randn(shape, memory_format)
    _check_against_reference(kernels, x, _weight(rows, k), MODES[mode], padding, "sigmoid", channel_dim)


@pytest.mark.parametrize("layout", ["2d-channels-last", "tokens", "3d"])
def test_backward_takes_a_broadcast_gradient(kernels, layout):
    # out.sum() hands backward an expanded (stride 0) gradient: it must be copied, not read as dense.
    x, channel_dim = _input(layout)
    x.requires_grad_()
    weight = _weight(k=3).requires_grad_()
    fused_eca_function(x, weight, None, False, False, "zeros", "sigmoid", channel_dim, kernels).sum().backward()
    x_ref, weight_ref = x.detach().clone().requires_grad_(), weight.detach().clone().requires_grad_()
    eca_reference(x_ref, weight_ref, channel_dim=channel_dim).sum().backward()
    _assert_close(x.grad, x_ref.grad, "gradient of x")
    _assert_close(weight.grad, weight_ref.grad, "gradient of weight")


def test_empty_batch_gives_an_empty_result_and_a_zero_weight_gradient():
    # The plain operators (pooling="avgmax", TorchScript) handle N=0; the fast path must too.
    x = torch.randn(0, 6, 3, 3, requires_grad=True)
    layer = ECA(6, kernel_size=3)
    out = layer(x)
    out.sum().backward()
    assert out.shape == x.shape
    torch.testing.assert_close(layer.conv.weight.grad, torch.zeros_like(layer.conv.weight))


# ---------------------------------------------------------------------------------------------
# The no-grad forward, directly on (N, C, S) views.


def _reference_gate(mean, weight, padding, gate):
    """The reference's gate for a descriptor: two spatial positions mean +- 1 pool to ``mean``,
    and the difference of their rescaled values is twice the gate."""
    pair = torch.stack([mean + 1, mean - 1], dim=2)
    rescaled = eca_reference(pair, weight, padding, "avg", gate)
    return (rescaled[..., 0] - rescaled[..., 1]) / 2


FORWARD_CASES = [  # identity, relu, in place, padding, gate
    (False, False, False, "zeros", "sigmoid"),
    (False, False, True, "circular", "hard_sigmoid"),
    (True, True, False, "circular", "sigmoid"),
    (True, False, True, "zeros", "hard_sigmoid"),
]


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize(("identity", "relu", "inplace", "padding", "gate"), FORWARD_CASES)
def test_forward_writes_out_and_returns_mean_and_gate(kernels, layout, identity, relu, inplace, padding, gate):
    x, channel_dim = _input(layout)
    weight = _weight(CHANNELS, k=5)
    shortcut = _like(x, seed=3) if identity else None
    expected = eca_reference(x, weight, padding, "avg", gate, channel_dim)
    expected = expected if shortcut is None else expected + shortcut
    expected = expected.clamp(min=0) if relu else expected
    expected_mean = channel_view(x, channel_dim).mean(dim=2)
    out = x if inplace else torch.empty_like(x)
    strides = x.stride()
    with torch.no_grad():
        mean, gates = kernels.forward(x, weight, shortcut, relu, padding, gate, out, channel_dim)
    assert out.stride() == strides
    _assert_close(out, expected, "output")
    assert mean.shape == gates.shape == (x.shape[0], CHANNELS) and mean.dtype == gates.dtype == torch.float64
    _assert_close(mean, expected_mean, "mean")
    _assert_close(gates, _reference_gate(expected_mean, weight, padding, gate), "gate")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_forward_keeps_mean_and_gate_in_float32_for_lower_precision(kernels, dtype):
    x = torch.randn(2, 6, 4, 4).to(dtype)
    mean, gates = kernels.forward(x, _weight(dtype=dtype), None, False, "zeros", "sigmoid", torch.empty_like(x), 1)
    assert mean.dtype == gates.dtype == torch.float32


# Powers of two that spread sample 1's inputs from the dtype's subnormals up to where sums of
# them, in float32, still fit.
_EXPONENTS = {torch.bfloat16: (-135, 100), torch.float16: (-26, 13)}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize(("identity", "relu"), [(False, False), (True, True)])
@pytest.mark.parametrize("length", [5, 7, 128, 149])  # short rows (8 and 16 lanes); long rows in whole and part vectors
def test_low_precision_rescale_rounds_the_float32_result_to_nearest_even(dtype, memory_format, identity, relu, length):
    """Bit for bit: the compiled kernels compute act(x * gate + identity) in float32 and round it once
    to bfloat16 or float16 (NaN stays NaN, and the ReLU of NaN is 0 as everywhere in the kernels),
    whichever narrowing the build uses, across the dtype's range: subnormal results, ties, overflow
    to infinity. Zero taps gate every channel at exactly 0.5, so the values below are exact in
    float32. (The ATen backend multiplies in the low precision, rounding twice.)"""
    assert cpu_kernels.available()
    shape = (3, length, 3, length)
    finfo = torch.finfo(dtype)
    low, high = _EXPONENTS[dtype]
    x = torch.randn(shape)  # sample 0: a NaN
    x[0, 0, 0, 0] = float("nan")
    x[1] *= torch.exp2(torch.randint(low, high, shape[1:]).float())  # sample 1: the dtype's range
    x[2, 0, 0, 0] = finfo.tiny  # tiny * 0.5 is subnormal
    x[2, 0, 0, 1:3] = torch.tensor([2.0, 2.0 + 2 * finfo.eps])  # 1 and 1 + eps (odd) after the gate
    x[2, 0, 0, 3] = finfo.max  # max * 0.5 + max overflows
    x = x.to(dtype, memory_format=memory_format)
    shortcut = None
    if identity:
        shortcut = torch.randn(shape)
        shortcut[2, 0, 0, 0] = 0
        shortcut[2, 0, 0, 1:3] = finfo.eps / 2  # ties: 1 + eps / 2 rounds down, 1 + 3 eps / 2 up (to even)
        shortcut[2, 0, 0, 3] = finfo.max
        shortcut = shortcut.to(dtype, memory_format=memory_format)
    out = torch.empty_like(x)
    _, gates = cpu_kernels.forward(
        x, torch.zeros(1, 1, 3, dtype=torch.float64), shortcut, relu, "zeros", "sigmoid", out, 1
    )
    assert (gates[1:] == 0.5).all()
    expected = x.float() * gates[:, :, None, None]
    if shortcut is not None:
        expected = expected + shortcut.float()
    if relu:
        expected = torch.where(expected > 0, expected, torch.zeros_like(expected))
    expected = expected.to(dtype)
    assert ((expected != 0) & (expected.abs() < finfo.tiny)).any()  # subnormal results
    assert expected.isinf().any() == identity
    if identity:
        assert expected[2, 0, 0, 1:3].tolist() == [1.0, 1.0 + 2 * finfo.eps]
    torch.testing.assert_close(out, expected, rtol=0, atol=0, equal_nan=True)
    assert out.isnan().any() != relu


@pytest.mark.parametrize("relu", [False, True])
def test_forward_in_place_with_the_input_as_its_own_identity(kernels, relu):
    # An inference tail whose shortcut is the branch input itself: every element is read, then written.
    x = _randn((2, 6, 3, 3), torch.channels_last)
    weight = _weight(k=3)
    expected = eca_reference(x, weight) + x
    expected = expected.clamp(min=0) if relu else expected
    kernels.forward(x, weight, x, relu, "zeros", "sigmoid", x, 1)
    _assert_close(x, expected, "output")


# ---------------------------------------------------------------------------------------------
# gradcheck of the compiled backend.


@pytest.mark.parametrize(
    ("shape", "memory_format", "channel_dim"),
    [
        ((2, 6, 3, 2), torch.contiguous_format, 1),
        ((2, 6, 3, 2), torch.channels_last, 1),
        ((2, 3, 6), torch.contiguous_format, -1),
    ],
    ids=["channels-first", "channels-last", "tokens"],
)
@pytest.mark.parametrize("mode", ["layer", "layer-in-place", "residual-relu", "residual-relu-in-place"])
@pytest.mark.parametrize(("padding", "gate"), [("zeros", "sigmoid"), ("circular", "hard_sigmoid")])
def test_gradcheck_compiled_kernels(shape, memory_format, channel_dim, mode, padding, gate):
    assert cpu_kernels.available()
    options = MODES[mode]
    x = _randn(shape, memory_format)
    inputs = (x.requires_grad_(), _weight(CHANNELS, k=5).requires_grad_(), _like(x, seed=3).requires_grad_())

    def function(x, weight, identity):
        source = x.clone() if options.inplace else x  # gradcheck's inputs are leaves
        shortcut = identity if options.identity else None
        return fused_eca_function(
            source, weight, shortcut, options.relu, options.inplace, padding, gate, channel_dim, cpu_kernels
        )

    assert type(function(*inputs).grad_fn).__name__ == "_FusedEcaBackward"
    assert torch.autograd.gradcheck(function, inputs)


@pytest.mark.parametrize("layout", ["2d", "2d-channels-last", "3d-channels-last", "tokens"])
@pytest.mark.parametrize("mode", ["layer", "residual-relu", "residual-none", "x-only", "residual-relu-identity-only"])
@pytest.mark.parametrize(("padding", "rows"), [("zeros", 1), ("circular", CHANNELS)])
def test_second_derivatives_out_of_place_match_the_plain_operators(kernels, layout, mode, padding, rows):
    # Differentiated with create_graph=True, the fused backward answers in plain recorded operators.
    options = MODES[mode]
    x, channel_dim = _input(layout)
    leaves = {"x": x, "weight": _weight(rows), "identity": _like(x, seed=3)}
    inputs = tuple(leaf.requires_grad_(name in options.grads) for name, leaf in leaves.items())

    def function(x, weight, identity):
        shortcut = identity if options.identity else None
        return fused_eca_function(x, weight, shortcut, options.relu, False, padding, "sigmoid", channel_dim, kernels)

    assert type(function(*inputs).grad_fn).__name__ == "_FusedEcaBackward"
    assert torch.autograd.gradgradcheck(function, inputs)


@pytest.mark.parametrize("mode", ["layer-in-place", "residual-relu-in-place", "residual-none-in-place"])
def test_in_place_calls_inside_twice_differentiable_keep_their_input(kernels, mode):
    options = MODES[mode]
    x = _randn((2, CHANNELS, 3, 3), torch.channels_last)
    inputs = (x.requires_grad_(), _weight().requires_grad_(), _like(x, seed=3).requires_grad_())

    def function(x, weight, identity):
        shortcut = identity if options.identity else None
        return fused_eca_function(x * 1, weight, shortcut, options.relu, True, "zeros", "sigmoid", 1, kernels)

    with twice_differentiable():
        assert torch.autograd.gradgradcheck(function, inputs)


def test_a_hard_sigmoid_gate_has_no_second_derivative_as_in_the_plain_operators(kernels):
    # PyTorch's hardsigmoid has no double backward; the fused path says the same, not something else.
    x = _randn((2, CHANNELS, 3, 3)).requires_grad_()
    weight = _weight()
    for out in (
        fused_eca_function(x, weight, None, False, False, "zeros", "hard_sigmoid", 1, kernels),
        x * torch.nn.functional.hardsigmoid(x.mean(dim=(2, 3), keepdim=True)),  # PyTorch's own gate
    ):
        (grad_x,) = torch.autograd.grad(out.square().sum(), x, create_graph=True)
        with pytest.raises(RuntimeError, match="derivative for aten::hardsigmoid_backward is not implemented"):
            grad_x.sum().backward()


@pytest.mark.parametrize("mode", ["layer-in-place", "residual-relu-in-place", "residual-none-in-place"])
def test_a_second_derivative_through_an_in_place_call_raises_even_where_unused_inputs_are_allowed(kernels, mode):
    # x is gone, so there is no second derivative; the refusal is tied to x's graph, so that
    # torch.autograd.grad(..., allow_unused=True) meets it instead of answering None.
    options = MODES[mode]
    source = _randn((2, CHANNELS, 3, 3)).requires_grad_()
    identity = _like(source, seed=3) if options.identity else None
    out = fused_eca_function(source * 1, _weight(), identity, options.relu, True, "zeros", "sigmoid", 1, kernels)
    (grad_x,) = torch.autograd.grad(out.square().sum(), source, create_graph=True)
    reference_source = source.detach().clone().requires_grad_()
    expected = eca_reference(reference_source, _weight())
    if options.identity:
        expected = expected + identity
    if options.relu:
        expected = expected.clamp(min=0)
    (expected_grad,) = torch.autograd.grad(expected.square().sum(), reference_source)
    _assert_close(grad_x.detach(), expected_grad, "first derivative")  # still exact
    with pytest.raises(RuntimeError, match="no second derivative"):
        torch.autograd.grad(grad_x.sum(), source, allow_unused=True)


@pytest.mark.parametrize("batch", [1, 5])  # fewer samples than threads: pass by pass; else sample by sample
@pytest.mark.parametrize("layout", ["2d", "2d-channels-last", "tokens"])
@pytest.mark.parametrize("mode", ["layer", "layer-in-place", "residual-relu", "residual-relu-in-place", "x-only"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_backward_routes_match_reference(batch, layout, mode, dtype):
    """With two threads the backward runs a batch of one pass by pass and a batch of five sample by
    sample (each sample's tap gradients in a row of their own, added up afterwards): both against
    the float64 reference, per-channel kernels, so every tap's gradient sums over the samples."""
    assert cpu_kernels.available()
    shape, memory_format, channel_dim = LAYOUTS[layout]
    x = _randn((batch, *shape[1:]), memory_format, dtype, seed=batch)
    with intra_op_threads(2):
        _check_against_reference(
            cpu_kernels, x, _weight(CHANNELS, k=5, seed=batch + 1), MODES[mode], "zeros", "sigmoid", channel_dim
        )


@pytest.mark.parametrize(("batch", "threads"), [(1, 2), (2, 3)])
@pytest.mark.parametrize("mode", ["layer", "layer-in-place", "residual-relu-in-place", "weight-only"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_channels_last_sums_split_by_positions_match_reference(batch, threads, mode, dtype):
    """With fewer samples than threads, channels-last sums go by ranges of positions, one range per
    thread as in the rescale, and each thread's sums are added up afterwards: two threads split a
    sample of 43x41 positions, three threads two samples, one range across their boundary. 37
    channels leave a remainder after the vectors. Forward and backward against the float64 reference."""
    assert cpu_kernels.available()
    x = _randn((batch, 37, 43, 41), torch.channels_last, dtype, seed=batch)
    with intra_op_threads(threads):
        _check_against_reference(cpu_kernels, x, _weight(37, k=5, seed=threads), MODES[mode])


@pytest.mark.parametrize("spatial", [(7, 7), (23, 23)])  # rows of 49 (eight at a time) and 529 (one at a time)
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("mode", ["layer", "layer-in-place", "residual-relu", "residual-relu-in-place", "weight-only"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_streamed_reductions_match_reference(spatial, memory_format, mode, dtype):
    """The channel sums of the forward and backward read four far-apart runs of rows (or of
    positions, channels-last) side by side, a row from each in turn (short rows two from each,
    eight at a time): 21 rows per sample (sums run sample by sample) and 49 or 529 positions leave
    rows and positions over after the runs, and remainders of the vectors within each row; every
    reduction of the backward (masked, stored, recovered in place) against the float64 reference."""
    assert cpu_kernels.available()
    x = _randn((2, 21, *spatial), memory_format, dtype, seed=sum(spatial))
    _check_against_reference(cpu_kernels, x, _weight(21, k=5, seed=3), MODES[mode])


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_sums_over_millions_of_positions_keep_float32_accuracy(memory_format):
    """A float32 sum over 4M positions (a large 3-D volume's channel) drifts by about 1e-6 of
    itself; the kernels carry their float32 sums on in float64 every 8192 positions, so the mean
    and the backward's channel sums stay within a few 1e-8 (torch.mean's accuracy)."""
    assert cpu_kernels.available()
    generator = torch.Generator().manual_seed(0)
    x = (torch.rand(1, 3, 2048, 2049, generator=generator) + 1.0).to(memory_format=memory_format)
    grad = (torch.rand(x.shape, generator=generator) + 1.0).to(memory_format=memory_format)
    expected_mean = x.double().mean(dim=(2, 3))
    torch.testing.assert_close(cpu_kernels.mean(x, 1).double(), expected_mean, rtol=2e-7, atol=0)

    weight = _weight(dtype=torch.float32).requires_grad_()
    fused_eca_function(x, weight, None, False, False, "zeros", "sigmoid", 1, cpu_kernels).backward(grad)
    reference_weight = weight.detach().double().requires_grad_()
    eca_reference(x.double(), reference_weight).backward(grad.double())
    # The kernel's gradient sums grad * x over every position, then over the channels' taps.
    torch.testing.assert_close(weight.grad.double(), reference_weight.grad, rtol=5e-7, atol=0)


# Channels-first rows of 8 to 127 values, rescaled back to back as one run: rows of one vector and of
# one value more (eight lanes, and sixteen with AVX-512), 7x7 maps, the longest short rows; and a
# batch of one whose ~70,000 values two threads split mid-batch (a batch of three runs sample by sample).
SHORT_ROWS = [(3, 37, 8), (3, 37, 9), (3, 37, 16), (3, 37, 17), (3, 37, 49), (3, 37, 127), (1, 1429, 49)]


@pytest.mark.parametrize("shape", SHORT_ROWS, ids=["x".join(map(str, shape)) for shape in SHORT_ROWS])
@pytest.mark.parametrize("mode", ["layer-in-place", "residual-relu", "residual-relu-in-place"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_short_rows_take_their_own_gate_and_shift(shape, mode, dtype):
    """A vector across two rows takes each lane's gate, and in the input gradient's pass each lane's
    shift, from its own row. Neighbouring channels differ sharply: means alternating 0.5 and 2 (gates
    0.62 and 0.88 through the centre tap) and gradients alternating +8 and -8 (shifts of opposite
    signs), so a lane that took its neighbour's row would miss the float64 reference by ten times the
    tolerance."""
    assert cpu_kernels.available()
    channels = shape[1]
    alternating = torch.arange(channels) % 2 == 0
    means = torch.where(alternating, 0.5, 2.0).double()
    x = (0.25 * _randn(shape, seed=shape[2]) + means[:, None]).to(dtype)
    grad = torch.where(alternating, 8.0, -8.0)[:, None].expand(shape).to(dtype)
    weight = torch.tensor([[[0.0, 1.0, 0.0]]], dtype=torch.float64)
    with intra_op_threads(2):
        _check_against_reference(cpu_kernels, x, weight, MODES[mode], grad=grad)


@settings(max_examples=30, deadline=None)
@given(
    batch=st.integers(1, 3),
    channels=st.integers(1, 10),
    spatial=st.lists(st.integers(1, 4), min_size=1, max_size=3),
    layout=st.sampled_from(["channels-first", "channels-last", "tokens"]),
    padding=st.sampled_from(["zeros", "circular"]),
    gate=st.sampled_from(["sigmoid", "hard_sigmoid"]),
    per_channel=st.booleans(),
    k=st.sampled_from([1, 3, 5, 7]),
    mode=st.sampled_from(list(MODES)),
    seed=st.integers(0, 2**16),
)
def test_random_shapes_and_options_match_reference(
    batch, channels, spatial, layout, padding, gate, per_channel, k, mode, seed
):
    assume(padding == "zeros" or k // 2 <= channels)
    if layout == "tokens":
        x, channel_dim = _randn((batch, *spatial, channels), seed=seed), -1
    else:
        x, channel_dim = _randn((batch, channels, *spatial), seed=seed), 1
        if layout == "channels-last":
            x = x.movedim(1, -1).contiguous().movedim(-1, 1)  # channels innermost in memory
    weight = _weight(channels if per_channel else 1, k, seed=seed + 1)
    _check_against_reference(cpu_kernels, x, weight, MODES[mode], padding, gate, channel_dim)


# ---------------------------------------------------------------------------------------------
# In place: errors instead of wrong gradients.


def test_in_place_layer_on_a_leaf_that_requires_grad_raises(kernels):
    x = torch.randn(2, 6, 4, 4, requires_grad=True)
    with pytest.raises(RuntimeError, match="leaf"):
        ECA(6, kernel_size=3, inplace=True)(x)
    with pytest.raises(RuntimeError, match="leaf"):
        fused_eca_function(x, _weight(dtype=torch.float32), None, False, True, "zeros", "sigmoid", 1, kernels)


def _saved_by_sigmoid():
    """A sigmoid's output ``x`` (its backward reads it), and the tensor to call backward on: ``x``."""
    x = torch.randn(2, 6, 4, 4, requires_grad=True).sigmoid()
    return x, x


def _saved_by_a_later_mul():
    """``x = source * 2`` (no gradient of its own), and ``x * other``, whose backward reads ``x``."""
    x = torch.randn(2, 6, 4, 4) * 2
    return x, x * torch.randn(2, 6, 4, 4, requires_grad=True)


@pytest.mark.parametrize("make", [_saved_by_sigmoid, _saved_by_a_later_mul])
@pytest.mark.parametrize("call", ["layer", "functional", "functional-no-grad", "residual"])
def test_in_place_on_a_tensor_saved_for_backward_raises_at_backward(make, call):
    # Whatever path runs (a graph, none because nothing needs one, none under no_grad), overwriting
    # a tensor another op saved must bump its version so that op's backward refuses to run.
    x, other_output = make()
    weight = torch.randn(1, 1, 3)
    if call == "layer":
        ECA(6, kernel_size=3, inplace=True)(x)
    elif call == "functional":
        eca(x, weight, inplace=True)
    elif call == "residual":
        eca_residual(x, weight, torch.randn(2, 6, 4, 4), inplace=True)
    else:
        with torch.no_grad():
            eca(x, weight, inplace=True)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        other_output.sum().backward()


@pytest.mark.parametrize("kind", ["leaf", "intermediate", "view", "identity-is-x"])
@pytest.mark.parametrize("layout", ["2d-channels-last", "tokens"])
@pytest.mark.parametrize("activation", ["relu", "none"])
def test_residual_tail_in_place_under_autograd_matches_reference(kind, layout, activation):
    # The tail may overwrite x while recording a graph only where that is safe (an intermediate
    # result that is no view and does not share the shortcut's memory); every kind of x must get
    # the reference's gradients either way.
    x, channel_dim = _input(layout)
    leaves = (x.requires_grad_(), _weight(CHANNELS, k=3).requires_grad_(), _like(x, seed=3).requires_grad_())
    references = tuple(leaf.detach().clone().requires_grad_() for leaf in leaves)

    def reference_tail(x, weight, identity):
        out = eca_reference(x, weight, channel_dim=channel_dim) + identity
        return out.clamp(min=0) if activation == "relu" else out

    def fused_tail(x, weight, identity):
        return eca_residual(x, weight, identity, activation, channel_dim=channel_dim, inplace=True)

    grad = _randn(x.shape, seed=9)
    for tail, (source, weight, shortcut) in ((fused_tail, leaves), (reference_tail, references)):
        branch = {"leaf": source, "view": (source * 1.0).view(source.shape)}.get(kind, source * 1.0)
        tail(branch, weight, branch if kind == "identity-is-x" else shortcut).backward(grad)
    for name, leaf, reference in zip(["x", "weight", "identity"], leaves, references, strict=True):
        if kind == "identity-is-x" and name == "identity":
            assert leaf.grad is None
        else:
            _assert_close(leaf.grad, reference.grad, f"gradient of {name}")


@pytest.mark.parametrize("route", ["public", "compiled", "aten"])
@pytest.mark.parametrize(("dtype", "tolerance"), [(torch.bfloat16, 1e-2), (torch.float16, 1e-3)])
def test_half_tail_keeps_x_so_a_large_shortcut_costs_no_gradient_accuracy(route, dtype, tolerance):
    # Overwritten, x * gate would come back as output - identity, rounded at the shortcut's scale:
    # with a shortcut ten times the branch that put the kernel gradient 16-18% off in bfloat16 and
    # 1% in float16. Half types keep x, and their gradients are as close as the dtype allows.
    values = _randn((8, 16, 6, 6)) * 0.5
    shortcut = (_randn((8, 16, 6, 6), seed=2) * 10 + 10).to(dtype)
    weight = _weight(dtype=dtype).requires_grad_()
    grad = _randn((8, 16, 6, 6), seed=3).to(dtype)
    source = values.to(dtype).requires_grad_()
    branch = source * 1
    before = branch.detach().clone()
    if route == "public":
        out = eca_residual(branch, weight, shortcut, inplace=True)
    else:
        backend = cpu_kernels if route == "compiled" else ComposedKernels(aten_kernels)
        out = fused_eca_function(branch, weight, shortcut, True, True, "zeros", "sigmoid", 1, backend)
    assert out.data_ptr() != branch.data_ptr() and torch.equal(branch.detach(), before)
    out.backward(grad)
    references = (source.detach().double().requires_grad_(), weight.detach().double().requires_grad_())
    eca_residual_reference(*references, shortcut, relu=True).backward(grad.double())
    for name, leaf, reference in zip(["x", "weight"], (source, weight), references, strict=True):
        error = (leaf.grad.double() - reference.grad).norm() / reference.grad.norm()
        assert error < tolerance, f"gradient of {name}: relative error {error:.1e}"


def test_forward_writing_in_place_bumps_the_version_counter(kernels):
    x = torch.randn(2, 6, 4, 4)
    version = x._version
    with torch.no_grad():
        kernels.forward(x, torch.randn(1, 1, 3), None, False, "zeros", "sigmoid", x, 1)
    assert x._version > version


def test_in_place_on_a_view_of_a_batch_gives_exact_gradients(kernels):
    source = _randn((3, 6, 4, 4)).requires_grad_()
    weight = _weight(k=3).requires_grad_()
    base = source * 1.0
    fused_eca_function(base[1:], weight, None, False, True, "zeros", "sigmoid", 1, kernels)
    grad = _randn(base.shape, seed=5)
    base.backward(grad)
    source_ref, weight_ref = source.detach().clone().requires_grad_(), weight.detach().clone().requires_grad_()
    expected = torch.cat([source_ref[:1], eca_reference(source_ref[1:], weight_ref)])
    expected.backward(grad)
    _assert_close(base.detach(), expected.detach(), "output")
    _assert_close(source.grad, source_ref.grad, "gradient of x")
    _assert_close(weight.grad, weight_ref.grad, "gradient of weight")


# ---------------------------------------------------------------------------------------------
# The compiled operators' own argument checks.


def _x3():
    return torch.randn(2, 4, 5, dtype=torch.float64)


def _call_by_name(operator, arguments):
    """Calls a registered operator with keyword ``arguments``; optional ones not named are ``None``."""
    schema = operator.default._schema
    unnamed = {argument.name: None for argument in schema.arguments if isinstance(argument.type, torch.OptionalType)}
    return operator(**{**unnamed, **arguments})


FORWARD_ERRORS = {  # changed arguments, what the message says
    "strided-input": ({"x": torch.randn(2, 4, 10)[:, :, ::2]}, "channels-first or channels-last dense"),
    "2-d-input": ({"x": torch.randn(2, 4)}, "at least 3 dims, got 2 dims"),
    "channel-dim": ({"channel_dim": 2}, "channel_dim must be 1 or -1, got 2"),
    "out-strides": ({"out": torch.empty(2, 5, 4, dtype=torch.float64).transpose(1, 2)}, "out must have the input's"),
    "out-shape": ({"out": torch.empty(2, 4, 6, dtype=torch.float64)}, "out must have the input's shape"),
    "out-dtype": ({"out": torch.empty(2, 4, 5)}, "out must be a CPU tensor of the input's dtype"),
    "identity-strides": (
        {"identity": torch.empty(2, 5, 4, dtype=torch.float64).transpose(1, 2)},
        "identity must have the input's shape and strides",
    ),
    "identity-dtype": ({"identity": torch.empty(2, 4, 5)}, "identity must be a CPU tensor of the input's dtype"),
    "even-k": ({"weight": torch.randn(1, 1, 4)}, r"weight must have shape \[1 or C, 1, k\] with k odd"),
    "weight-dims": ({"weight": torch.randn(1, 3)}, r"weight must have shape \[1 or C, 1, k\]"),
    "weight-rows": ({"weight": torch.randn(3, 1, 3)}, "weight has 3 rows for 4 channels"),
    "padding": ({"padding": "reflect"}, "padding must be 'zeros' or 'circular', got 'reflect'"),
    "gate": ({"gate": "relu"}, "gate must be 'sigmoid' or 'hard_sigmoid', got 'relu'"),
    "circular-k-over-C": ({"weight": torch.randn(1, 1, 11), "padding": "circular"}, r"circular padding needs k // 2"),
}


def _mapping_flags(address: int) -> set[str]:
    """The ``VmFlags`` of the memory mapping that holds ``address`` (``hg``: huge pages advised);
    empty where nothing is mapped."""
    mapping = None
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()[0]
        if "-" in head and not head.endswith(":"):
            start, end = (int(part, 16) for part in head.split("-"))
            mapping = start <= address < end
        elif head == "VmFlags:" and mapping:
            return set(line.split()[1:])
    return set()


def _huge_pages_can_be_advised() -> bool:
    setting = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    return sys.platform.startswith("linux") and setting.exists() and "[never]" not in setting.read_text()


OWN_MAPPING_BYTES = 1 << 20
"""Buffers from this size up get a recycled memory mapping of their own (``kHugePageAdviceBytes``)."""


@pytest.mark.parametrize("layout", ["2d", "2d-channels-last", "tokens"])
@pytest.mark.parametrize("size", ["small", "medium", "large"])
def test_empty_like_keeps_the_geometry_and_advises_huge_pages_for_large_buffers(layout: str, size: str):
    assert cpu_kernels.available()
    shape, memory_format, _ = LAYOUTS[layout]
    if size == "medium":  # about 2 MiB of float32: above the threshold, where glibc's heap may serve it
        shape = (*shape[:-1], shape[-1] * ((512 << 10) // math.prod(shape)))
    if size == "large":
        shape = (shape[0] * 256, *shape[1:-1], shape[-1] * 512)
    like = torch.zeros(shape).contiguous(memory_format=memory_format)
    fresh = cpu_kernels.empty_like(like)
    assert fresh.shape == like.shape and fresh.dtype == like.dtype and fresh.stride() == like.stride()
    assert fresh.data_ptr() != like.data_ptr()
    own_mapping = fresh.numel() * fresh.element_size() >= OWN_MAPPING_BYTES
    assert own_mapping == (size != "small")
    if own_mapping and _huge_pages_can_be_advised():
        assert "hg" in _mapping_flags(fresh.data_ptr())
    if size == "large":  # a mapping of its own: saved, shared and resized like any tensor
        fresh.fill_(2.0)
        buffer = io.BytesIO()
        torch.save(fresh, buffer)
        buffer.seek(0)
        assert torch.equal(torch.load(buffer, weights_only=True), fresh)
        shared = cpu_kernels.empty_like(like).fill_(2.0).share_memory_()
        assert shared.is_shared() and torch.equal(shared, fresh)
        del shared
        address, numel = fresh.data_ptr(), fresh.numel()
        fresh.resize_(numel + 1)
        fresh.view(-1)[-1] = 1.0
        assert fresh.data_ptr() != address
        assert torch.all(fresh.view(-1)[:numel] == 2.0) and fresh.view(-1)[-1] == 1.0


def _minor_page_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


# 64 MiB and three pages: a size no other test allocates, so no buffer they freed is reused here.
_CACHED_NUMEL = (64 << 18) + 3 * 1024


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the recycled mappings are Linux-only")
def test_freed_large_buffers_are_reused_without_page_faults():
    """A fresh mapping faults its pages in on the first write; a recycled one is mapped already."""
    assert cpu_kernels.available()
    like = torch.empty(_CACHED_NUMEL)
    first = cpu_kernels.empty_like(like)
    before = _minor_page_faults()
    first.fill_(1.0)
    fresh_faults = _minor_page_faults() - before
    address = first.data_ptr()
    del first
    second = cpu_kernels.empty_like(like)
    assert second.data_ptr() == address
    before = _minor_page_faults()
    second.fill_(2.0)
    recycled_faults = _minor_page_faults() - before
    assert fresh_faults >= 32 and recycled_faults < 8, (fresh_faults, recycled_faults)
    other = cpu_kernels.empty_like(torch.empty(_CACHED_NUMEL + 1024))  # another size: a mapping of its own
    assert other.data_ptr() != address and torch.all(second == 2.0)


BUFFER_CACHE_CHECK = """
import json, sys
import torch
sys.path.insert(0, sys.argv[1])
from test_cpu_kernels import _mapping_flags
from ecanet.ops import cpu_kernels

assert cpu_kernels.available()
buffers = [cpu_kernels.empty_like(torch.empty(10 << 20)).fill_(1.0) for _ in range(3)]  # 40 MiB each
addresses = [b.data_ptr() for b in buffers]
while buffers:
    buffers.pop(0)  # freed in allocation order
print(json.dumps([_mapping_flags(a) != set() for a in addresses]))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the recycled mappings are Linux-only")
@pytest.mark.parametrize(("megabytes", "still_mapped"), [("100", [False, True, True]), ("0", [False, False, False])])
def test_buffer_cache_keeps_at_most_its_limit_unmapping_the_oldest(megabytes, still_mapped):
    """Three freed 40 MiB buffers: a 100 MiB cache keeps the two freed last, a 0 MiB one none."""
    tests = Path(__file__).resolve().parent
    sources = [str(tests.parents[1] / "src"), str(tests.parent)]  # the checkout's ecanet, reference.py
    python_path = os.pathsep.join(filter(None, [*sources, os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "ECANET_BUFFER_CACHE_MB": megabytes, "PYTHONPATH": python_path}
    result = subprocess.run(
        [sys.executable, "-c", BUFFER_CACHE_CHECK, str(tests)], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert json.loads(result.stdout.splitlines()[-1]) == still_mapped


CACHE_ROUTES_CHECK = """
import itertools, sys
import torch
sys.path.insert(0, sys.argv[1])
from reference import eca_reference, eca_residual_reference
from ecanet.ops import cpu_kernels

assert cpu_kernels.available()
torch.set_num_threads(2)  # large samples go one by one or in blocks with a sample for every thread
tolerance = {torch.float64: 1e-10, torch.float32: 2e-5, torch.bfloat16: 2e-2}
shapes = [(2, 40, 5, 5), (3, 37, 6, 7), (1, 37, 6, 7), (2, 64, 1, 130), (2, 30, 300), (2, 24, 3, 4, 5)]
cases = 0
for shape, dtype, (rows, k), padding, gate, (identity, relu), inplace, channels_last in itertools.product(
    shapes, tolerance, [(1, 3), (1, 5), ("C", 7), (1, 11)], ["zeros", "circular"], ["sigmoid", "hard_sigmoid"],
    [(False, False), (True, True)], [False, True], [False, True]
):
    if channels_last and len(shape) != 4:
        continue
    generator = torch.Generator().manual_seed(cases)
    x = torch.randn(shape, generator=generator, dtype=torch.float64).to(dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    weight = torch.randn(shape[1] if rows == "C" else 1, 1, k, generator=generator, dtype=torch.float64).to(dtype)
    shortcut = torch.randn(x.shape, generator=generator, dtype=torch.float64).to(dtype) if identity else None
    if shortcut is not None and channels_last:
        shortcut = shortcut.contiguous(memory_format=torch.channels_last)
    expected = eca_reference(x, weight, padding, "avg", gate) + (0 if shortcut is None else shortcut.double())
    expected = expected.clamp(min=0) if relu else expected
    source = x.clone()
    out = source if inplace else torch.empty_like(source)
    mean, gates = cpu_kernels.forward(source, weight, shortcut, relu, padding, gate, out, 1)
    torch.testing.assert_close(out.double(), expected, rtol=tolerance[dtype], atol=tolerance[dtype])
    torch.testing.assert_close(mean.double(), x.double().flatten(2).mean(2), rtol=tolerance[dtype], atol=1e-6)
    cases += 1
print(cases)
"""


def test_forward_takes_every_cache_route_correctly():
    """With the cache the kernels plan for set to 4 KiB, the forward takes all three routes: small
    samples one by one, larger channels-first samples a block of channels at a time (zero padding,
    blocks of at least k channels: the last block partial, k/2 channels carried to the next), other
    larger samples one by one (two threads, two or more samples) or pass by pass (one sample);
    each against the float64 reference."""
    tests = Path(__file__).resolve().parent
    sources = [str(tests.parents[1] / "src"), str(tests.parent)]  # the checkout's ecanet, reference.py
    python_path = os.pathsep.join(filter(None, [*sources, os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "ECANET_CPU_CACHE_BYTES": "4096", "PYTHONPATH": python_path}
    result = subprocess.run(
        [sys.executable, "-c", CACHE_ROUTES_CHECK, str(tests)], env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert int(result.stdout.splitlines()[-1]) == 3 * 4 * 2 * 2 * 2 * 2 * (
        4 * 2 + 2
    )  # per shape and layout: 3 dtypes, 4 kernels, 2 paddings, gates, tails, in place


@pytest.mark.parametrize("case", list(FORWARD_ERRORS))
def test_forward_operator_rejects_bad_arguments(case):
    assert cpu_kernels.available()
    changes, message = FORWARD_ERRORS[case]
    x3 = _x3()
    arguments = {
        "x": x3,
        "weight": torch.randn(1, 1, 3),
        "relu": False,
        "padding": "zeros",
        "gate": "sigmoid",
        "out": torch.empty_like(x3),
        "channel_dim": 1,
        **changes,
    }
    with pytest.raises(RuntimeError, match=message):
        _call_by_name(torch.ops.ecanet.eca_forward, arguments)


BACKWARD_ERRORS = {
    "strided-grad": ({"grad": torch.randn(2, 4, 10, dtype=torch.float64)[:, :, ::2]}, "channels-last dense"),
    "saved-strides": (
        {"saved": torch.randn(2, 5, 4, dtype=torch.float64).transpose(1, 2)},
        "saved input must have the input's shape and strides",
    ),
    "relu-output-shape": ({"relu_out": torch.randn(2, 4, 6, dtype=torch.float64)}, "ReLU output must have"),
    "masked-without-relu": ({"masked": torch.empty(2, 4, 5, dtype=torch.float64)}, "needs the ReLU output"),
    "masked-dtype": (
        {"relu_out": torch.randn(2, 4, 5, dtype=torch.float64), "masked": torch.empty(2, 4, 5)},
        "masked gradient buffer must be a CPU tensor of the input's dtype",
    ),
    "identity-not-in-place": ({"identity": torch.randn(2, 4, 5, dtype=torch.float64)}, "only needed in place"),
    "identity-strides": (
        {"inplace": True, "identity": torch.randn(2, 5, 4, dtype=torch.float64).transpose(1, 2)},
        "identity must have the input's shape and strides",
    ),
    "dx-strides": (
        {"dx": torch.empty(2, 5, 4, dtype=torch.float64).transpose(1, 2)},
        "input gradient buffer must have the input's shape and strides",
    ),
    "mean-dtype": ({"mean": torch.zeros(2, 4)}, r"mean and gate must be contiguous \(N, C\) tensors in Double"),
    "gate-size": ({"gate": torch.zeros(2, 3, dtype=torch.float64)}, r"mean and gate must be contiguous \(N, C\)"),
    "even-k": ({"weight": torch.randn(1, 1, 2)}, "with k odd"),
    "padding": ({"padding": "same"}, "padding must be 'zeros' or 'circular', got 'same'"),
    "gate-kind": ({"gate_kind": "tanh"}, "gate must be 'sigmoid' or 'hard_sigmoid', got 'tanh'"),
}


@pytest.mark.parametrize("case", list(BACKWARD_ERRORS))
def test_backward_operator_rejects_bad_arguments(case):
    assert cpu_kernels.available()
    changes, message = BACKWARD_ERRORS[case]
    x3, weight = _x3(), torch.randn(1, 1, 3)
    mean, gate = torch.ops.ecanet.eca_forward(x3, weight, None, False, "zeros", "sigmoid", torch.empty_like(x3), 1)
    arguments = {
        "grad": torch.randn_like(x3),
        "saved": x3,
        "mean": mean,
        "gate": gate,
        "weight": weight,
        "padding": "zeros",
        "gate_kind": "sigmoid",
        "inplace": False,
        "dx": torch.empty_like(x3),
        "channel_dim": 1,
        **changes,
    }
    with pytest.raises(RuntimeError, match=message):
        _call_by_name(torch.ops.ecanet.eca_backward, arguments)


# ---------------------------------------------------------------------------------------------
# Building, and falling back when the build is off or fails (fresh processes: available() is cached).

FALLBACK_CHECK = """
import json, warnings
import torch
from ecanet.functional import eca, eca_residual
from ecanet.ops import cpu_kernels
from ecanet.ops.dispatch import kernels_for
from reference import eca_reference, eca_residual_reference

with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    ready = cpu_kernels.available()
x = torch.randn(2, 6, 4, 4, dtype=torch.float64).to(memory_format=torch.channels_last).requires_grad_()
weight = torch.randn(1, 1, 3, dtype=torch.float64, requires_grad=True)
out = eca(x, weight)
out.backward(torch.ones_like(out))
x_ref, weight_ref = x.detach().clone().requires_grad_(), weight.detach().clone().requires_grad_()
expected = eca_reference(x_ref, weight_ref)
expected.backward(torch.ones_like(expected))
pairs = [(out, expected), (x.grad, x_ref.grad), (weight.grad, weight_ref.grad)]
print(json.dumps({
    "available": ready,
    "warnings": [f"{w.category.__name__}: {w.message}" for w in caught],
    "backend": repr(kernels_for(x)),
    "grad_fn": type(out.grad_fn).__name__,
    "error": max((a - b).abs().max().item() for a, b in pairs),
}))
"""


# torch's cpp_extension takes the compiler from CXX (get_cxx_compiler) for its compiler check and
# for the ninja build; `false` fails both. With the check skipped, the failure is ninja's compile step.
FALLBACKS = {  # environment changes, whether CXX is `false`
    "disabled": ({cpu_kernels.DISABLE_VARIABLE: "0"}, False),
    "compiler-check-fails": ({}, True),
    "compile-fails": ({"TORCH_DONT_CHECK_COMPILER_ABI": "1"}, True),
}


@pytest.fixture(scope="module")
def fallback_reports(tmp_path_factory):
    """For each of ``FALLBACKS``: ``FALLBACK_CHECK``'s report from a fresh process, and the fresh
    (empty) ``TORCH_EXTENSIONS_DIR`` it had. The processes run side by side: each imports torch."""
    # The checkout's sources and tests/ (for reference.py) first, as pytest's own import path has them.
    tests = Path(__file__).resolve().parents[1]
    python_path = os.pathsep.join(filter(None, [str(tests.parent / "src"), str(tests), os.environ.get("PYTHONPATH")]))
    base = {name: value for name, value in os.environ.items() if name != cpu_kernels.DISABLE_VARIABLE}
    failing_compiler = shutil.which("false")
    runs = {}
    for name, (changes, broken_compiler) in FALLBACKS.items():
        if broken_compiler:
            if failing_compiler is None:
                continue
            changes = {**changes, "CXX": failing_compiler}
        extensions = tmp_path_factory.mktemp(name) / "extensions"
        env = {**base, **changes, "PYTHONPATH": python_path, "TORCH_EXTENSIONS_DIR": str(extensions)}
        process = subprocess.Popen(
            [sys.executable, "-c", FALLBACK_CHECK], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        runs[name] = process, extensions
    outputs = {name: process.communicate(timeout=300) for name, (process, _) in runs.items()}  # wait for all
    reports = {}
    for name, (stdout, stderr) in outputs.items():
        process, extensions = runs[name]
        assert process.returncode == 0, f"{name}: {stdout[-4000:]}{stderr[-4000:]}"
        reports[name] = json.loads(stdout.splitlines()[-1]), extensions
    return reports


def _fallback_report(reports, name):
    if name not in reports:
        pytest.skip("no `false` program to stand in for a broken compiler")
    return reports[name]


def test_disabled_by_the_environment_variable_the_aten_backend_runs(fallback_reports):
    report, extensions = _fallback_report(fallback_reports, "disabled")
    assert report["available"] is False and report["warnings"] == [] and not extensions.exists()
    assert report["backend"] == "ComposedKernels(ecanet.ops.aten_kernels)"
    assert report["grad_fn"] == "_FusedEcaBackward" and report["error"] < 1e-12


@pytest.mark.parametrize("failure", ["compiler-check-fails", "compile-fails"])
def test_a_build_that_fails_warns_and_the_aten_backend_runs(fallback_reports, failure):
    report, extensions = _fallback_report(fallback_reports, failure)
    assert any(extensions.iterdir()), "the build did not use the fresh extension directory"
    assert report["available"] is False
    assert any(w.startswith("RuntimeWarning: ecanet: could not build") for w in report["warnings"]), report
    assert report["backend"] == "ComposedKernels(ecanet.ops.aten_kernels)"
    assert report["grad_fn"] == "_FusedEcaBackward" and report["error"] < 1e-12


def test_build_name_is_stable_and_follows_the_sources_and_their_location(tmp_path, monkeypatch):
    name = cpu_kernels.build_name()
    assert cpu_kernels.build_name() == name and name.startswith("ecanet_cpu_")
    moved = tmp_path / "csrc"
    shutil.copytree(cpu_kernels.SOURCE_DIR, moved)
    monkeypatch.setattr(cpu_kernels, "SOURCE_DIR", moved)
    moved_name = cpu_kernels.build_name()
    assert moved_name != name  # another checkout: its own build
    sources = sorted(moved.iterdir())
    assert {path.suffix for path in sources} == {".cpp", ".h"}
    for edited in sources:
        text = edited.read_text()
        edited.write_text(text + "// an edit\n")
        assert cpu_kernels.build_name() not in (name, moved_name), edited.name
        edited.write_text(text)  # the original text: that place's name
        assert cpu_kernels.build_name() == moved_name
