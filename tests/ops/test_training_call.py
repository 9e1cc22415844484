"""The one-step C++ training entry behind :func:`ecanet.ops.dispatch.eager_call` on CPU, against the float64 reference.

While autograd records, :class:`~ecanet.layers.ECA` and :mod:`ecanet.functional` reach the compiled
kernels through one C++ call that records one C++ autograd node (``FusedTraining``). Covered here:
its outputs and gradients over layouts, dtypes and options (gradcheck in float64), which inputs
get gradients, in-place writes and autograd's checks of them, output gradients in other layouts,
repeated and second derivatives, and a network's training step against the checked path. Where it
must hand over to the checked path: ``test_eager_call.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
from torch import Tensor
from torch.profiler import ProfilerActivity, profile
from torch.utils.checkpoint import checkpoint

from ecanet import twice_differentiable
from ecanet.functional import eca, eca_residual
from ecanet.models import eca_resnet18
from ecanet.ops import cpu_kernels
from ecanet.ops.second_derivatives import inputs_kept
from operator_log import OperatorLog
from reference import eca_reference, eca_residual_reference

CHANNELS = 6


@dataclass(frozen=True)
class Layout:
    shape: tuple[int, ...]
    memory_format: torch.memory_format
    channel_dim: int


LAYOUTS = {
    "1d": Layout((3, CHANNELS, 7), torch.contiguous_format, 1),
    "2d": Layout((3, CHANNELS, 4, 5), torch.contiguous_format, 1),
    "2d-channels-last": Layout((3, CHANNELS, 4, 5), torch.channels_last, 1),
    "3d-channels-last": Layout((2, CHANNELS, 3, 2, 4), torch.channels_last_3d, 1),
    "tokens": Layout((3, 7, CHANNELS), torch.contiguous_format, -1),
}


@dataclass(frozen=True)
class Mode:
    identity: bool
    relu: bool
    inplace: bool


MODES = {
    "layer": Mode(identity=False, relu=False, inplace=False),
    "layer-in-place": Mode(identity=False, relu=False, inplace=True),
    "tail-relu-in-place": Mode(identity=True, relu=True, inplace=True),
    "tail-relu": Mode(identity=True, relu=True, inplace=False),
    "tail-in-place": Mode(identity=True, relu=False, inplace=True),
}
TOLERANCES = {torch.float64: 1e-10, torch.float32: 2e-5, torch.bfloat16: 2e-2}


def _randn(layout: Layout, seed: int, dtype: torch.dtype = torch.float64) -> Tensor:
    values = torch.randn(layout.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return values.to(dtype=dtype, memory_format=layout.memory_format)


def _weight(rows: int = 1, k: int = 3) -> Tensor:
    # Larger than the default init, so that the gate varies across channels and errors show.
    return torch.randn(rows, 1, k, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


def _call(mode: Mode, x: Tensor, weight: Tensor, identity: Tensor, channel_dim: int) -> Tensor:
    """The public call of ``mode`` on ``x * 1`` (an intermediate result, as a block's branch output is)."""
    source = x * 1
    if not mode.identity:
        return eca(source, weight, channel_dim=channel_dim, inplace=mode.inplace)
    activation = "relu" if mode.relu else "none"
    return eca_residual(source, weight, identity, activation, inplace=mode.inplace, channel_dim=channel_dim)


def _checked_call(where: Layout, how: Mode) -> tuple[Callable[..., Tensor], tuple[Tensor, Tensor, Tensor]]:
    """The public call of ``how`` as a function of ``(x, weight, identity)``, and float64 leaves for
    gradcheck (``[C, 1, 5]`` kernels, so that every channel's taps differ)."""
    inputs = (_randn(where, 0).requires_grad_(), _weight(rows=CHANNELS, k=5).requires_grad_())

    def function(x: Tensor, weight: Tensor, identity: Tensor) -> Tensor:
        return _call(how, x, weight, identity, where.channel_dim)

    return function, (*inputs, _randn(where, 2).requires_grad_())


def _reference(mode: Mode, x: Tensor, weight: Tensor, identity: Tensor, channel_dim: int) -> Tensor:
    shortcut = identity if mode.identity else None
    return eca_residual_reference(x, weight, shortcut, mode.relu, channel_dim=channel_dim)


def _is_training_node(out: Tensor) -> bool:
    return out.grad_fn is not None and "FusedTraining" in out.grad_fn.name()


def _assert_close(got: Tensor, expected: Tensor, tolerance: float) -> None:
    scale = max(1.0, expected.abs().max().item())
    torch.testing.assert_close(got.double(), expected, rtol=0, atol=tolerance * scale)


@pytest.mark.parametrize("dtype", list(TOLERANCES), ids=str)
@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_outputs_and_gradients_match_the_float64_reference(layout: str, mode: str, dtype: torch.dtype):
    where, how = LAYOUTS[layout], MODES[mode]
    x = _randn(where, 0, dtype).requires_grad_()
    identity = _randn(where, 2, dtype).requires_grad_()
    weight = _weight().float().requires_grad_()  # a float32 kernel, as a layer holds it
    grad = _randn(where, 3, dtype)
    out = _call(how, x, weight, identity, where.channel_dim)
    assert _is_training_node(out) and out.dtype == dtype and out.stride() == x.stride()
    out.backward(grad)

    x_ref, weight_ref, identity_ref = (t.detach().double().requires_grad_() for t in (x, weight, identity))
    expected = _reference(how, x_ref, weight_ref, identity_ref, where.channel_dim)
    expected.backward(grad.double())
    tolerance = TOLERANCES[dtype]
    _assert_close(out.detach(), expected.detach(), tolerance)
    _assert_close(x.grad, x_ref.grad, tolerance)
    # The kernel's gradient is float32 like the kernel, and sums over every element.
    _assert_close(weight.grad, weight_ref.grad, 10 * max(tolerance, TOLERANCES[torch.float32]))
    if how.identity:
        _assert_close(identity.grad, identity_ref.grad, tolerance)
    else:
        assert identity.grad is None


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("layout", ["1d", "2d-channels-last", "tokens"])
def test_gradcheck(layout: str, mode: str):
    function, inputs = _checked_call(LAYOUTS[layout], MODES[mode])
    assert _is_training_node(function(*inputs))
    assert torch.autograd.gradcheck(function, inputs)


@pytest.mark.parametrize("requiring", ["x", "weight", "identity", "identity-and-weight"])
def test_only_the_inputs_that_require_grad_get_gradients(requiring: str):
    where, how = LAYOUTS["2d-channels-last"], MODES["tail-relu-in-place"]
    x, weight, identity = _randn(where, 0), _weight(), _randn(where, 2)
    for name, tensor in (("x", x), ("weight", weight), ("identity", identity)):
        tensor.requires_grad_(name in requiring)
    out = _call(how, x, weight, identity, where.channel_dim)
    assert _is_training_node(out)
    out.square().sum().backward()
    x_ref, weight_ref, identity_ref = (t.detach().clone().requires_grad_() for t in (x, weight, identity))
    _reference(how, x_ref, weight_ref, identity_ref, where.channel_dim).square().sum().backward()
    for name, tensor, reference in (
        ("x", x, x_ref),
        ("weight", weight, weight_ref),
        ("identity", identity, identity_ref),
    ):
        if name in requiring:
            torch.testing.assert_close(tensor.grad, reference.grad, rtol=1e-10, atol=1e-10)
        else:
            assert tensor.grad is None


def test_block_tail_writes_into_the_branch_output_unless_the_shortcut_shares_its_memory():
    where = LAYOUTS["2d"]
    weight = _weight().requires_grad_()
    branch = _randn(where, 0).requires_grad_() * 1
    out = eca_residual(branch, weight, _randn(where, 2), inplace=True)
    assert _is_training_node(out) and out.data_ptr() == branch.data_ptr()

    # The shortcut is the branch output's own memory: the result must go to a new tensor.
    source = _randn(where, 0).requires_grad_()
    shared = source * 1
    out = eca_residual(shared, weight, shared.detach(), inplace=True)
    assert _is_training_node(out) and out.data_ptr() != shared.data_ptr()
    out.sum().backward()
    source_ref = source.detach().clone().requires_grad_()
    shared_ref = source_ref * 1
    _reference(MODES["tail-relu"], shared_ref, weight.detach(), shared_ref.detach(), 1).sum().backward()
    torch.testing.assert_close(source.grad, source_ref.grad, rtol=1e-10, atol=1e-10)


def test_in_place_into_a_tensor_another_node_saved_raises_at_backward():
    where = LAYOUTS["2d"]
    x = _randn(where, 0).requires_grad_()
    saved_by_exp = x.exp()  # exp's backward reads its output
    out = eca(saved_by_exp, _weight().requires_grad_(), inplace=True)
    assert _is_training_node(out)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.sum().backward()


def test_an_output_gradient_in_another_layout_is_read_correctly():
    where = LAYOUTS["2d"]
    x, weight = _randn(where, 0).requires_grad_(), _weight().requires_grad_()
    grad = _randn(LAYOUTS["2d-channels-last"], 3)  # channels-last, for a channels-first output
    out = eca(x * 1, weight)
    assert _is_training_node(out)
    out.backward(grad)
    x_ref, weight_ref = x.detach().clone().requires_grad_(), weight.detach().clone().requires_grad_()
    eca_reference(x_ref, weight_ref).backward(grad)
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(weight.grad, weight_ref.grad, rtol=1e-10, atol=1e-10)


def test_a_retained_graph_gives_the_same_gradients_twice():
    where = LAYOUTS["tokens"]
    x, weight = _randn(where, 0).requires_grad_(), _weight().requires_grad_()
    out = _call(MODES["tail-relu-in-place"], x, weight, _randn(where, 2), where.channel_dim)
    out.sum().backward(retain_graph=True)
    first = (x.grad.clone(), weight.grad.clone())
    out.sum().backward()
    torch.testing.assert_close(x.grad, 2 * first[0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(weight.grad, 2 * first[1], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("mode", ["layer", "tail-relu"])
@pytest.mark.parametrize("layout", ["1d", "2d-channels-last", "tokens"])
def test_second_derivatives_out_of_place_match_the_plain_operators(layout: str, mode: str):
    # With create_graph=True the node answers in plain recorded operators (computed in Python).
    function, inputs = _checked_call(LAYOUTS[layout], MODES[mode])
    assert _is_training_node(function(*inputs))
    assert torch.autograd.gradgradcheck(function, inputs)


@pytest.mark.parametrize("mode", ["layer-in-place", "tail-relu-in-place", "tail-in-place"])
def test_in_place_calls_keep_their_input_for_second_derivatives_inside_twice_differentiable(mode: str):
    function, inputs = _checked_call(LAYOUTS["2d-channels-last"], MODES[mode])
    with twice_differentiable():
        out = function(*inputs)
        assert _is_training_node(out)
        assert torch.autograd.gradgradcheck(function, inputs)
    assert not inputs_kept()


def test_a_networks_gradient_penalty_inside_twice_differentiable_matches_finite_differences():
    # R1 / WGAN-GP on an ECA-ResNet, whose block tails write in place while training: inside the
    # context they keep their inputs, and the penalty's gradient is checked numerically.
    torch.manual_seed(0)
    model = eca_resnet18(num_classes=10, small_input=True, width=4).double().train()
    images = torch.randn(2, 3, 8, 8, dtype=torch.float64, requires_grad=True)

    def penalty(images: Tensor) -> Tensor:
        (grad_images,) = torch.autograd.grad(model(images).square().sum(), images, create_graph=True)
        return grad_images.square().sum()

    with pytest.raises(RuntimeError, match="twice_differentiable"):
        penalty(images).backward()
    with twice_differentiable():
        assert torch.autograd.gradcheck(penalty, (images,))


@pytest.mark.parametrize("mode", ["layer-in-place", "tail-relu-in-place", "tail-in-place"])
def test_a_second_derivative_through_an_in_place_call_raises_with_ecanets_message(mode: str):
    where, how = LAYOUTS["2d"], MODES[mode]
    x, weight, identity = _randn(where, 0).requires_grad_(), _weight().requires_grad_(), _randn(where, 2)
    out = _call(how, x, weight, identity, where.channel_dim)
    assert _is_training_node(out)
    (grad_x,) = torch.autograd.grad(out.square().sum(), x, create_graph=True)
    x_ref = x.detach().clone().requires_grad_()
    expected = _reference(how, x_ref, weight.detach(), identity, where.channel_dim)
    (expected_grad,) = torch.autograd.grad(expected.square().sum(), x_ref)
    torch.testing.assert_close(grad_x, expected_grad, rtol=1e-10, atol=1e-10)  # the first one stays exact
    message = "ecanet: ECA wrote its result over its input"
    with pytest.raises(RuntimeError, match=message):  # not None: the refusal is tied to x's graph
        torch.autograd.grad(grad_x.sum(), x, allow_unused=True, retain_graph=True)
    with pytest.raises(RuntimeError, match=message):
        grad_x.sum().backward()


@pytest.mark.parametrize("mode", ["layer-in-place", "tail-relu-in-place", "tail-relu"])
def test_saved_tensor_hooks_see_what_the_python_function_saves(monkeypatch, mode: str):
    where, how = LAYOUTS["2d-channels-last"], MODES[mode]
    x, weight, identity = _randn(where, 0).requires_grad_(), _weight().requires_grad_(), _randn(where, 2)

    def saved_shapes() -> list[torch.Size]:
        shapes: list[torch.Size] = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: shapes.append(t.shape) or t, lambda t: t):
            _call(how, x, weight, identity, where.channel_dim).sum().backward()
        return shapes

    entry_saved = saved_shapes()
    entry = cpu_kernels.entry
    monkeypatch.setattr(cpu_kernels, "entry", lambda name: None if name == "eca_training" else entry(name))
    assert sorted(entry_saved) == sorted(saved_shapes()) and entry_saved


def test_checkpointing_recomputes_the_node_and_gives_the_same_gradients():
    torch.manual_seed(0)
    model = eca_resnet18(num_classes=10, small_input=True, width=8).double().train()
    x = torch.randn(4, 3, 16, 16, dtype=torch.float64, requires_grad=True)
    target = torch.randint(0, 10, (4,))
    state = {name: value.clone() for name, value in model.state_dict().items()}
    results = []
    for forward in (model, lambda x: checkpoint(model, x, use_reentrant=False)):
        model.load_state_dict(state)
        model.zero_grad()
        x.grad = None
        torch.nn.functional.cross_entropy(forward(x), target).backward()
        results.append([x.grad.clone(), *(parameter.grad.clone() for parameter in model.parameters())])
    for plain, checkpointed in zip(*results, strict=True):
        torch.testing.assert_close(checkpointed, plain, rtol=1e-12, atol=1e-12)


def _training_step(model: torch.nn.Module, x: Tensor, target: Tensor) -> dict[str, Tensor]:
    model.zero_grad()
    torch.nn.functional.cross_entropy(model(x), target).backward()
    return {name: parameter.grad.clone() for name, parameter in model.named_parameters()}


def _operators(call: Callable[[], object]) -> set[str]:
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        call()
    return {event.key for event in prof.key_averages()}


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last], ids=["nchw", "nhwc"])
def test_a_networks_training_step_matches_the_checked_path(memory_format: torch.memory_format):
    torch.manual_seed(0)
    model = eca_resnet18(num_classes=10, small_input=True, width=8).double().to(memory_format=memory_format).train()
    x = torch.randn(4, 3, 16, 16, dtype=torch.float64).contiguous(memory_format=memory_format)
    target = torch.randint(0, 10, (4,))
    state = {name: buffer.clone() for name, buffer in model.named_buffers()}
    operators = _operators(lambda: _training_step(model, x, target))
    # Every ECA call took the entry: none of the checked path's kernel operators ran.
    assert not {"ecanet::eca_forward", "ecanet::eca_backward"} & operators, sorted(operators)
    model.load_state_dict(state, strict=False)  # the BatchNorms' statistics as before the step
    entry = _training_step(model, x, target)
    model.load_state_dict(state, strict=False)
    with OperatorLog() as log:  # an operator-recording mode keeps the entry out
        checked = _training_step(model, x, target)
    assert log.arguments("ecanet.eca_backward.default"), "the checked path did not run the compiled kernels"
    for name, gradient in entry.items():
        torch.testing.assert_close(gradient, checked[name], rtol=1e-9, atol=1e-12, msg=name)
