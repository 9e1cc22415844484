"""When the fast path runs, and that every operator-recording tool still sees plain operators."""

import importlib.util
import io

import numpy as np
import pytest
import torch
from torch import nn

from ecanet import ECA
from ecanet.functional import eca as ECA_FUNCTION
from ecanet.ops import cpu_kernels, dispatch
from ecanet.ops.dispatch import fast_eca, kernels_for, use_plain_operators
from reference import eca_reference


class Tail(nn.Module):
    """A residual-block tail as ecanet's blocks write it."""

    def __init__(self, channels: int, inplace: bool = False) -> None:
        super().__init__()
        self.eca = ECA(channels, kernel_size=3, inplace=inplace)

    def forward(self, x: torch.Tensor, identity: torch.Tensor) -> torch.Tensor:
        return self.eca.residual(x * 1.0, identity)


def _expected(module, x, identity):
    return torch.clamp(eca_reference(x, module.eca.conv.weight.detach()) + identity.double(), min=0)


@pytest.mark.parametrize(
    "make",
    [
        lambda: torch.randn(2, 4, 3, 3),
        lambda: torch.randn(2, 4, 3, 3).to(memory_format=torch.channels_last),
        lambda: torch.randn(2, 4, 3, 3, dtype=torch.bfloat16),
    ],
)
def test_fast_path_takes_dense_floating_cpu_tensors(make):
    x = make()
    assert fast_eca(x, torch.ones(1, 1, 3), None, False, False, "zeros", "sigmoid", 1) is not None


@pytest.mark.parametrize(
    ("x", "identity"),
    [
        (torch.randn(2, 4, 6, 6)[:, :, ::2], None),  # strided slice: no (N, C, S) view
        (torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3).to(memory_format=torch.channels_last)),
        (torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3, dtype=torch.float64)),
        (torch.randn(2, 4, 3, 3, device="meta"), None),
    ],
)
def test_other_inputs_fall_back_and_still_match_the_reference(x, identity):
    weight = torch.randn(1, 1, 3)
    assert fast_eca(x, weight, identity, True, False, "zeros", "sigmoid", 1) is None
    if x.device.type == "cpu":
        layer = ECA(4, kernel_size=3)
        with torch.no_grad():
            layer.conv.weight.copy_(weight)
        out = layer(x) if identity is None else layer.residual(x, identity, inplace=False)
        expected = eca_reference(x, weight)
        expected = expected if identity is None else torch.clamp(expected + identity.double(), min=0)
        torch.testing.assert_close(out.double(), expected, rtol=1e-5, atol=1e-6)


def test_nothing_records_operators_in_plain_eager_mode():
    assert not use_plain_operators()
    assert kernels_for(torch.zeros(1)) is cpu_kernels  # built on this machine
    assert kernels_for(torch.zeros(1, device="meta")) is None


@pytest.fixture
def fresh_triton_choice():
    """The CUDA backend choice is cached per process: cleared before and after the test."""
    dispatch._cuda_takes_triton.cache_clear()
    yield
    dispatch._cuda_takes_triton.cache_clear()


@pytest.mark.usefixtures("fresh_triton_choice")
def test_triton_kernels_can_be_switched_off_by_environment(monkeypatch):
    monkeypatch.setenv(dispatch.TRITON_SWITCH, "0")
    assert not dispatch._cuda_takes_triton()
    dispatch._cuda_takes_triton.cache_clear()
    monkeypatch.setenv(dispatch.TRITON_SWITCH, "1")
    assert dispatch._cuda_takes_triton() == (importlib.util.find_spec("triton") is not None)


@pytest.mark.slow
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_torch_compile_fullgraph_through_layer_and_tail(memory_format):
    torch._dynamo.reset()
    tail = Tail(8)
    layer = ECA(8, kernel_size=3, inplace=True)
    x = torch.randn(2, 8, 5, 5).to(memory_format=memory_format)
    identity = torch.randn(2, 8, 5, 5).to(memory_format=memory_format)
    compiled_tail = torch.compile(tail, fullgraph=True)
    compiled_layer = torch.compile(lambda t: layer(t * 1.0), fullgraph=True)
    torch.testing.assert_close(compiled_tail(x, identity).double(), _expected(tail, x, identity), rtol=1e-5, atol=1e-5)
    expected = eca_reference(x, layer.conv.weight)
    torch.testing.assert_close(compiled_layer(x).double(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_torch_export_round_trip_of_the_tail():
    tail = Tail(8).eval()
    x, identity = torch.randn(2, 8, 4, 4), torch.randn(2, 8, 4, 4)
    program = torch.export.export(tail, (x, identity))
    names = {str(node.target) for node in program.graph.nodes if node.op == "call_function"}
    assert not any("ecanet" in name for name in names)
    torch.testing.assert_close(
        program.module()(x, identity).double(), _expected(tail, x, identity), rtol=1e-5, atol=1e-5
    )


@pytest.mark.slow
@pytest.mark.parametrize("dynamo", [True, False])
def test_onnx_export_runs_in_onnxruntime(dynamo):
    onnxruntime = pytest.importorskip("onnxruntime")
    tail = Tail(8).eval()
    x, identity = torch.randn(2, 8, 4, 4), torch.randn(2, 8, 4, 4)
    buffer = io.BytesIO()
    if dynamo:
        program = torch.onnx.export(tail, (x, identity), dynamo=True)
        program.save(buffer)
    else:
        torch.onnx.export(tail, (x, identity), buffer, dynamo=False, input_names=["x", "identity"])
    session = onnxruntime.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    feeds = {inp.name: t.numpy() for inp, t in zip(session.get_inputs(), (x, identity), strict=True)}
    (result,) = session.run(None, feeds)
    np.testing.assert_allclose(result, _expected(tail, x, identity).numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("inplace", [False, True])
def test_torchscript_script_and_trace_of_the_tail(inplace):
    tail = Tail(8, inplace=inplace).eval()
    x, identity = torch.randn(2, 8, 4, 4), torch.randn(2, 8, 4, 4)
    expected = _expected(tail, x, identity)
    scripted = torch.jit.script(tail)
    # Traced in grad mode with the trace check on: it retraces under no_grad, and the graphs must agree.
    traced = torch.jit.trace(tail, (x, identity))
    for module in (scripted, traced):
        torch.testing.assert_close(module(x, identity).double(), expected, rtol=1e-5, atol=1e-5)
    assert "aten::sigmoid" in str(traced.graph)


def test_torch_func_transforms_see_plain_operators():
    x = torch.randn(3, 4, 3, 3, dtype=torch.float64)
    weight = torch.randn(1, 1, 3, dtype=torch.float64)
    gradient = torch.func.grad(lambda w: ECA_FUNCTION(x, w).sum())(weight)
    expected = torch.func.grad(lambda w: eca_reference(x, w).sum())(weight)
    torch.testing.assert_close(gradient, expected, rtol=1e-10, atol=1e-12)
    batched = torch.vmap(lambda t: ECA_FUNCTION(t, weight))(x.unsqueeze(1))
    torch.testing.assert_close(batched.squeeze(1), eca_reference(x, weight), rtol=1e-12, atol=1e-12)


def test_in_place_write_without_a_graph_is_seen_by_autograd():
    source = torch.randn(2, 8, 5, 5, requires_grad=True)
    y = source.sigmoid()  # its backward needs y
    with torch.no_grad():
        version = y._version
        assert fast_eca(y, torch.ones(1, 1, 3), None, False, True, "zeros", "sigmoid", 1) is y
        assert y._version > version
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.sum().backward()


def test_weight_on_another_device_takes_the_plain_operators():
    x = torch.randn(2, 4, 3, 3)
    assert fast_eca(x, torch.ones(1, 1, 3, device="meta"), None, False, False, "zeros", "sigmoid", 1) is None
    descriptor = torch.ones(2, 4, device="meta")
    assert fast_eca(x, torch.ones(1, 1, 3), None, False, False, "zeros", "sigmoid", 1, descriptor) is None
