"""The public API's fast path against the plain float64 reference.

On CPU this runs the backend ``kernels_for`` picks (the compiled kernels where they build): while
autograd records, as the compiled extension's one C++ training call (its node ``FusedTraining``)
where it builds, else under the fused Python autograd Function; ``test_cpu_kernels.py`` runs both
CPU backends side by side.
"""

import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ecanet import ECA
from ecanet.functional import eca, eca_residual
from ecanet.ops import cpu_kernels
from reference import eca_reference, eca_residual_reference

LAYOUTS = {
    "1d": ((3, 6, 7), torch.contiguous_format, 1),
    "2d": ((3, 6, 4, 5), torch.contiguous_format, 1),
    "2d-channels-last": ((3, 6, 4, 5), torch.channels_last, 1),
    "3d": ((2, 6, 3, 2, 4), torch.contiguous_format, 1),
    "3d-channels-last": ((2, 6, 3, 2, 4), torch.channels_last_3d, 1),
    "tokens": ((3, 7, 6), torch.contiguous_format, -1),
}
OPTIONS = list(itertools.product(["zeros", "circular"], ["sigmoid", "hard_sigmoid"], [1, 6]))
OPTION_IDS = [f"{p}-{g}-rows{r}" for p, g, r in OPTIONS]


def _input(layout, dtype=torch.float64, seed=0):
    shape, memory_format, channel_dim = LAYOUTS[layout]
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=generator, dtype=torch.float64).to(dtype=dtype, memory_format=memory_format)
    return x, channel_dim


def _weight(rows=1, k=3, dtype=torch.float64, seed=1):
    # Larger than the default init so the gate varies across channels and errors show.
    return torch.randn(rows, 1, k, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _fused_node(out):
    """Whether ``out`` was recorded by the fused backward this machine's CPU runs (see above)."""
    if cpu_kernels.available():
        return "FusedTraining" in out.grad_fn.name()
    return type(out.grad_fn).__name__ == "_FusedEcaBackward"


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize(("padding", "gate", "rows"), OPTIONS, ids=OPTION_IDS)
def test_forward_matches_reference(layout, padding, gate, rows):
    x, channel_dim = _input(layout)
    weight = _weight(rows)
    out = eca(x, weight, padding, "avg", gate, channel_dim)
    assert out.stride() == x.stride()
    torch.testing.assert_close(out, eca_reference(x, weight, padding, "avg", gate, channel_dim), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("activation", ["relu", "none"])
@pytest.mark.parametrize("grad_mode", [True, False])
def test_residual_matches_reference(layout, activation, grad_mode):
    x, channel_dim = _input(layout)
    identity, _ = _input(layout, seed=5)
    weight = _weight(k=5)
    expected = eca_residual_reference(x, weight, identity, activation == "relu", channel_dim=channel_dim)
    with torch.set_grad_enabled(grad_mode):
        out = eca_residual(x.clone(), weight.requires_grad_(grad_mode), identity, activation, channel_dim=channel_dim)
    assert out.stride() == x.stride()
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("dtype", "rtol", "atol"), [(torch.float32, 1e-5, 1e-6), (torch.bfloat16, 1.6e-2, 1e-2)])
@pytest.mark.parametrize("layout", ["2d", "2d-channels-last", "tokens"])
def test_lower_precision_forward_and_backward_match_reference(dtype, rtol, atol, layout):
    x64, channel_dim = _input(layout)
    weight64 = _weight(k=3)
    x = x64.to(dtype).requires_grad_()
    weight = weight64.float().requires_grad_()
    out = eca(x, weight, channel_dim=channel_dim)
    grad = torch.randn_like(x64)
    out.backward(grad.to(dtype))
    assert out.dtype == dtype and _fused_node(out)
    x_ref = x.detach().double().requires_grad_()
    weight_ref = weight64.detach().requires_grad_()
    expected = eca_reference(x_ref, weight_ref, channel_dim=channel_dim)
    expected.backward(grad.to(dtype).double())
    torch.testing.assert_close(out.double(), expected, rtol=rtol, atol=atol)
    torch.testing.assert_close(x.grad.double(), x_ref.grad, rtol=rtol, atol=atol)
    # The kernel gradient sums over every element: compare relative to its own scale.
    torch.testing.assert_close(
        weight.grad.double(), weight_ref.grad, rtol=rtol, atol=atol * weight_ref.grad.abs().max()
    )


@pytest.mark.parametrize("layout", ["1d", "2d-channels-last", "3d", "tokens"])
@pytest.mark.parametrize(("padding", "gate", "rows"), OPTIONS, ids=OPTION_IDS)
def test_gradcheck_out_of_place_and_in_place(layout, padding, gate, rows):
    x, channel_dim = _input(layout)
    weight = _weight(rows)

    def out_of_place(x, weight):
        return eca(x, weight, padding, "avg", gate, channel_dim)

    def in_place(x, weight):
        return eca(x * 1.0, weight, padding, "avg", gate, channel_dim, inplace=True)

    for function in (out_of_place, in_place):
        inputs = (x.clone().requires_grad_(), weight.clone().requires_grad_())
        assert _fused_node(function(*inputs))
        assert torch.autograd.gradcheck(function, inputs)


@pytest.mark.parametrize("layout", ["2d", "2d-channels-last", "tokens"])
@pytest.mark.parametrize("activation", ["relu", "none"])
def test_gradcheck_residual(layout, activation):
    x, channel_dim = _input(layout)
    identity, _ = _input(layout, seed=3)
    inputs = (x.requires_grad_(), _weight(k=5).requires_grad_(), identity.requires_grad_())

    def tail(x, weight, identity):
        return eca_residual(x, weight, identity, activation, channel_dim=channel_dim)

    assert torch.autograd.gradcheck(tail, inputs)


@settings(max_examples=15, deadline=None)
@given(
    batch=st.integers(1, 3),
    channels=st.integers(1, 9),
    spatial=st.lists(st.integers(1, 4), min_size=1, max_size=3),
    channels_inner=st.booleans(),
)
def test_random_shapes_and_layouts_match_reference(batch, channels, spatial, channels_inner):
    x = torch.randn(batch, channels, *spatial, dtype=torch.float64)
    if channels_inner:
        x = x.movedim(1, -1).contiguous().movedim(-1, 1)  # channels innermost in memory
    weight = _weight(k=3).requires_grad_()
    x.requires_grad_()
    out = eca(x, weight)
    out.square().sum().backward()
    x_ref, weight_ref = x.detach().clone().requires_grad_(), weight.detach().clone().requires_grad_()
    expected = eca_reference(x_ref, weight_ref)
    expected.square().sum().backward()
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(weight.grad, weight_ref.grad, rtol=1e-10, atol=1e-12)


def test_in_place_writes_into_the_input_and_gives_the_out_of_place_gradients():
    source = torch.randn(2, 6, 4, 4, dtype=torch.float64, requires_grad=True)
    weight = _weight().requires_grad_()
    x = source * 2.0
    out = eca(x, weight, inplace=True)
    assert out is x and x._version > 0
    grad = torch.randn_like(out)
    out.backward(grad)
    grads = (source.grad.clone(), weight.grad.clone())
    source.grad = weight.grad = None
    eca(source * 2.0, weight).backward(grad)
    torch.testing.assert_close(grads, (source.grad, weight.grad), rtol=1e-12, atol=1e-12)


def test_in_place_gradient_is_exact_where_the_gate_underflows_to_zero():
    x = torch.randn(2, 4, 3, 3, dtype=torch.float32) + 5.0
    weight = torch.full((1, 1, 3), -100.0, requires_grad=True)  # sigmoid(-1500) == 0 in float32
    source = x.clone().requires_grad_()
    out = eca(source * 1.0, weight, inplace=True)
    assert (out == 0).all()
    out.sum().backward()
    assert torch.isfinite(source.grad).all() and torch.isfinite(weight.grad).all()
    torch.testing.assert_close(source.grad, torch.zeros_like(x))


def test_in_place_on_a_leaf_that_requires_grad_raises():
    x = torch.randn(2, 6, 4, 4, requires_grad=True)
    with pytest.raises(RuntimeError, match="leaf"):
        eca(x, _weight(dtype=torch.float32), inplace=True)


def test_in_place_on_a_tensor_saved_for_backward_raises_instead_of_wrong_gradients():
    source = torch.randn(2, 6, 4, 4, requires_grad=True)
    x = source.exp()  # exp saves its output for backward
    out = ECA(6, inplace=True)(x)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.sum().backward()


@pytest.mark.parametrize("tail", [False, True])
def test_a_gradient_penalty_gets_the_plain_operators_second_derivatives(tail):
    # WGAN-GP / R1 style: the gradient with respect to the images is penalised, so the fused
    # backward is differentiated again (out of place; in place it raises, see test_training_call).
    generator = torch.Generator().manual_seed(5)
    conv = torch.nn.Conv2d(3, 6, 3, padding=1).double()
    weight = _weight().requires_grad_()
    images = torch.randn(4, 3, 5, 5, generator=generator, dtype=torch.float64)
    shortcut = torch.randn(4, 6, 5, 5, generator=generator, dtype=torch.float64)

    def penalty_gradients(fast: bool) -> tuple[torch.Tensor, ...]:
        source = images.clone().requires_grad_()
        features = conv(source)
        if fast:
            out = eca_residual(features, weight, shortcut) if tail else eca(features, weight)
            assert _fused_node(out)
        else:
            out = eca_reference(features, weight)
            out = (out + shortcut).clamp(min=0) if tail else out
        (grad_images,) = torch.autograd.grad(out.mean(dim=(1, 2, 3)).sum(), source, create_graph=True)
        penalty = (grad_images.flatten(1).norm(dim=1) - 1).square().mean()
        return torch.autograd.grad(penalty, (weight, conv.weight, conv.bias))

    for got, expected in zip(penalty_gradients(True), penalty_gradients(False), strict=True):
        assert expected.abs().max() > 0
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)


def test_layer_inplace_option_and_repr():
    layer = ECA(6, kernel_size=3, inplace=True)
    assert repr(layer) == "ECA(6, k=3, padding=zeros, pooling=avg, gate=sigmoid, inplace=True)"
    x = torch.randn(2, 6, 5, 5)
    expected = eca_reference(x, layer.conv.weight)
    with torch.no_grad():
        out = layer(x)
    assert out is x
    torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-6)
    scripted = torch.jit.script(layer)
    torch.testing.assert_close(scripted(torch.ones(1, 6, 2, 2)), layer(torch.ones(1, 6, 2, 2)))


@pytest.mark.parametrize("pooling", ["avg", "avgmax"])
def test_block_tail_writes_into_the_branch_output_where_it_may(pooling):
    layer = ECA(6, kernel_size=3, pooling=pooling)
    x, identity = torch.randn(2, 6, 4, 4), torch.randn(2, 6, 4, 4)
    keep = x.clone()
    kept = layer.residual(keep.clone(), identity, inplace=False)
    (expected_grad,) = torch.autograd.grad(kept.sum(), layer.conv.weight)
    # Training: the fast path (avg) overwrites x and recovers x * gate in backward; the plain
    # operators (avgmax) leave x intact.
    out = layer.residual(x, identity)
    assert (out.data_ptr() == x.data_ptr()) == (pooling == "avg")
    assert torch.equal(x, keep) == (pooling == "avgmax")
    (grad,) = torch.autograd.grad(out.sum(), layer.conv.weight)
    torch.testing.assert_close(out.detach(), kept.detach(), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        inference = layer.residual(keep, identity)
    assert inference.data_ptr() == keep.data_ptr()
    torch.testing.assert_close(inference, kept.detach(), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("case", ["leaf", "shared-shortcut", "view"])
def test_block_tail_keeps_what_its_backward_or_shortcut_needs(case):
    # While recording a graph, a tail writes into x only when x is an intermediate result that is
    # not a view and the shortcut has memory of its own; otherwise x stays intact.
    weight = _weight().requires_grad_()
    values = torch.randn(2, 6, 4, 4, dtype=torch.float64)
    if case == "leaf":
        x = values.clone().requires_grad_()
        identity = torch.randn_like(values)
    elif case == "shared-shortcut":
        x = values.clone().requires_grad_() * 1.0
        identity = x.detach()
    else:
        x = (torch.cat([values, values]).requires_grad_() * 1.0)[:2]  # a view of an intermediate result
        identity = torch.randn_like(values)
    before = x.detach().clone()
    out = eca_residual(x, weight, identity, inplace=True)
    assert out.data_ptr() != x.data_ptr() and torch.equal(x.detach(), before)
    x_ref, w_ref = before.clone().requires_grad_(), weight.detach().clone().requires_grad_()
    expected = eca_residual_reference(x_ref, w_ref, identity.clone(), relu=True)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    (got,) = torch.autograd.grad(out.sum(), weight)
    (wanted,) = torch.autograd.grad(expected.sum(), w_ref)
    torch.testing.assert_close(got, wanted, rtol=1e-10, atol=1e-10)


def test_plain_in_place_path_under_autograd_raises_instead_of_wrong_gradients():
    # avgmax runs the plain operators; its in-place rescale still may not corrupt gradients.
    source = torch.randn(2, 6, 4, 4, requires_grad=True)
    out = eca(source * 1.0, torch.randn(1, 1, 3, requires_grad=True), pooling="avgmax", inplace=True)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.sum().backward()


def test_float32_input_under_autocast_keeps_float32_pooling():
    # The pooling product must stay a float32 one under autocast (no bfloat16-rounded sums).
    x = torch.randn(2, 6, 4, 4) * 100 + 1000
    weight = _weight(dtype=torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = eca(x, weight)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), eca_reference(x, weight), rtol=1e-5, atol=1e-4)
