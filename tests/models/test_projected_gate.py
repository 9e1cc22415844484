"""ResNet bottlenecks through ECA's compiled-inference operators (:func:`ecanet.models.resnet.use_projected_gate`):
which calls take them, and what a compiled network computes with them (CPU kernels; the Triton
kernels are checked in ``tests/ops/projected_gate_checks.py``, a GPU network in ``tests/ops/cuda_checks.py``)."""

import re

import pytest
import torch
from torch._dynamo.testing import CompileCounterWithBackend
from torch._inductor.utils import run_and_get_code

from batchnorm_statistics import with_random_statistics
from ecanet.models import create_model
from ecanet.models.projected_gate import takes_projected_gate
from ecanet.models.resnet import Bottleneck, ResNet, use_projected_gate

_OPERATORS = ("ecanet.norm_relu_sums", "ecanet.projected_gate")


def _small_network(attention="eca"):
    torch.manual_seed(0)
    network = ResNet(Bottleneck, (1, 2, 1, 1), num_classes=10, width=8, attention=attention)
    return with_random_statistics(network).eval()


def _operator_calls(graph_module) -> dict[str, int]:
    """How often each operator appears in a graph torch.compile captured."""
    targets = [str(node.target) for node in graph_module.graph.nodes if node.op == "call_function"]
    return {name: sum(name in target for target in targets) for name in _OPERATORS}


def _compiled_calls(network, x, backend="eager"):
    """``network(x)`` compiled with ``backend``, and the operators' calls in what was captured."""
    counter = CompileCounterWithBackend(backend)
    out = torch.compile(network, backend=counter, fullgraph=True)(x)
    torch._dynamo.reset()
    return out, _operator_calls(counter.graphs[0])


def test_use_projected_gate_switches_the_eca_bottlenecks_only():
    assert use_projected_gate(create_model("eca_resnet50", num_classes=10, width=8)) == 16
    assert use_projected_gate(create_model("se_resnet50", num_classes=10, width=8)) == 0
    assert use_projected_gate(create_model("eca_resnet18", num_classes=10, width=8)) == 0  # basic blocks
    network = _small_network()
    use_projected_gate(network)
    assert use_projected_gate(network, enabled=False) == 5
    assert not any(getattr(block, "projected_gate", False) for block in network.modules())


def test_compiled_inference_takes_the_operators_in_every_switched_block():
    network = _small_network()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = network(x)
        _, calls = _compiled_calls(network, x)
        assert calls == dict.fromkeys(_OPERATORS, 0)
        use_projected_gate(network)
        out, calls = _compiled_calls(network, x)
    assert calls == dict.fromkeys(_OPERATORS, 5)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_eager_calls_keep_the_default_path():
    network = _small_network()
    use_projected_gate(network)
    block = network.layer1[0]
    x = torch.randn(2, block.conv1.in_channels, 8, 8)
    with torch.no_grad():
        assert not takes_projected_gate(block, x)


@pytest.mark.parametrize(
    "blocker", ["grad mode", "training", "hook on bn2", "hook on eca", "circular padding", "conv3 with a bias"]
)
def test_what_keeps_a_compiled_block_on_the_default_path(blocker):
    network = _small_network()
    use_projected_gate(network)
    x = torch.randn(2, 3, 32, 32)
    block = network.layer2[1]
    if blocker == "training":
        network.train()
    elif blocker == "hook on bn2":
        block.bn2.register_forward_hook(lambda module, args, output: None)
    elif blocker == "hook on eca":
        block.eca.register_forward_hook(lambda module, args, output: None)
    elif blocker == "circular padding":
        block.eca.padding = "circular"
    elif blocker == "conv3 with a bias":
        block.conv3.bias = torch.nn.Parameter(torch.zeros(block.conv3.out_channels))
    with torch.set_grad_enabled(blocker in ("grad mode", "training")):
        _, calls = _compiled_calls(network, x)
    expected = 0 if blocker in ("grad mode", "training") else 4
    assert calls == dict.fromkeys(_OPERATORS, expected)


def test_export_records_the_default_path():
    # ONNX and other exporters built on torch.export know no ecanet operators.
    network = _small_network()
    use_projected_gate(network)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = network(x)
        exported = torch.export.export(network, (x,))
    targets = [str(node.target) for node in exported.graph.nodes]
    assert not any(name in target for target in targets for name in _OPERATORS)
    torch.testing.assert_close(exported.module()(x), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_inductor_compiled_network_matches_float64_reference(memory_format):
    network = _small_network().to(memory_format=memory_format)
    use_projected_gate(network)
    x = torch.randn(2, 3, 32, 32).to(memory_format=memory_format)
    with torch.inference_mode():
        out, calls = _compiled_calls(network, x, backend="inductor")
        expected = network.double()(x.double())
    assert calls == dict.fromkeys(_OPERATORS, 5)
    torch.testing.assert_close(out.double(), expected, rtol=0, atol=1e-5 * expected.abs().max().item())


@pytest.mark.slow
def test_inductor_hands_the_convolutions_output_to_the_operator_as_it_is():
    # Inductor lays convolution outputs out channels-last in a channels-first network (always on
    # CPU with oneDNN, for convolution-heavy graphs on a GPU); the operator takes any layout, so
    # no copy goes before it (nor after it, back for conv3).
    network = _small_network()
    use_projected_gate(network)
    with torch.inference_mode(), torch._inductor.config.patch(force_disable_caches=True):
        _, (code, *_) = run_and_get_code(torch.compile(network), torch.randn(2, 3, 32, 32))
    torch._dynamo.reset()
    convolutions = set(re.findall(r"(buf\d+) = extern_kernels\.convolution\(", code))
    operator_inputs = re.findall(r"= torch\.ops\.ecanet\.norm_relu_sums\.default\((buf\d+),", code)
    assert len(operator_inputs) == 5 and set(operator_inputs) <= convolutions, (operator_inputs, convolutions)
