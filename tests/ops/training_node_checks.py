"""Checks of the C++ training node that launches the Triton kernels itself, run by
``test_triton_kernels.py`` in a fresh process (see :mod:`ecanet.ops.triton_training`).

Not collected by a plain ``pytest`` run. With ``ECANET_TRITON_DEVICE=cpu`` (the default) there is
no driver to launch through: the node's kernels are planned from stand-ins for compiled kernels
(:class:`ecanet.bench.host.CompiledStandIn`) carrying the signature Triton's compiler gets for
each launch on a GPU, and each launch the node makes is handed to Python, checked (grid, block,
every packed parameter against that signature and the tensors the node passed) and run by
Triton's interpreter on those tensors. With ``ECANET_TRITON_DEVICE=cuda`` (``make gpu-check``) the
call's first step through the Python path compiles the kernels, and the node launches them
through the CUDA driver.
"""

import os

os.environ["TRITON_INTERPRET"] = "1" if os.environ.get("ECANET_TRITON_DEVICE", "cpu") == "cpu" else "0"

import inspect
import struct

import pytest
import torch

from ecanet.bench.host import CompiledStandIn, cuda_signature
from ecanet.ops import cpu_kernels, prepared_calls, triton_training
from kernel_cases import DEVICE, LAYOUTS, TOLERANCES, random_tensor
from reference import eca_reference

_PACKED = {"i32": "<i", "i64": "<q", "fp32": "<f", "fp64": "<d"}
"""How Triton's launcher stores a parameter of each type (``backends/nvidia/driver.c``)."""


class _InterpretedLaunches:
    """Stand-ins for the compiled kernels of a prepared call's launches, and the callable the
    node's launches are handed to: checks each and runs its kernel in Triton's interpreter."""

    def __init__(self) -> None:
        self.plans: dict[int, tuple] = {}
        self.kernels: list[str] = []

    def stand_in_for(self, launch) -> None:
        plan = launch.plan
        kernel = plan.launcher.kernel
        tensors = len(inspect.signature(kernel.fn).parameters) - len(plan.scalars) - len(plan.constexprs)
        args = (torch.empty(4),) * tensors + plan.scalars
        stand_in = CompiledStandIn(cuda_signature(kernel, args, plan.constexprs))
        launch._compiled = stand_in
        self.plans[stand_in.function] = (plan, list(stand_in.src.signature.values()), tensors)

    def __call__(self, function, programs, threads, shared_bytes, parameters, tensors) -> None:
        plan, types, count = self.plans[function]
        assert (programs, threads, shared_bytes, len(tensors)) == (plan.programs, 128, 0, count)
        scalar_types = types[count : count + len(plan.scalars)]
        expected = b"".join(struct.pack("<Q", t.data_ptr()) for t in tensors)
        expected += b"".join(
            struct.pack(_PACKED[kind], value)
            for kind, value in zip(scalar_types, plan.scalars, strict=True)
            if kind != "constexpr"
        )
        assert parameters == expected + bytes(16)  # and the two null scratch pointers
        self.kernels.append(plan.launcher.kernel.fn.__name__)
        plan.launcher.kernel[(programs,)](*tensors, *plan.scalars, **plan.constexprs)


@pytest.fixture
def interpreted():
    """On CPU, the node's launches go to an :class:`_InterpretedLaunches` (to the driver after)."""
    if DEVICE != "cpu":
        yield None
        return
    launches = _InterpretedLaunches()
    launch_through = cpu_kernels.entry("launch_through")
    launch_through("python", launches)
    try:
        yield launches
    finally:
        launch_through("driver")


def _prepare(monkeypatch, interpreted, x, options, grad):
    """Stores the call with ``x`` and ``options`` and gets its kernels compiled: on CPU, stand-ins
    for every launch; on a GPU, one step through the Python path. Then calls take the node."""
    prepared_calls.remember(x, *options)
    if interpreted is not None:
        (prepared,) = prepared_calls._prepared.values()
        for launch in triton_training.planned_launches(prepared.training.plans):
            interpreted.stand_in_for(launch)
    else:  # with an input gradient, so that every kernel of the backward compiles
        prepared_calls.run(x.detach().clone().requires_grad_() * 1.0, *options).backward(grad)
    monkeypatch.setattr(triton_training, "in_use", True)


def _node_name(out: torch.Tensor) -> str:
    return out.grad_fn.name()


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize(("residual", "inplace"), [(False, False), (False, True), (True, False), (True, True)])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_training_node_matches_reference(monkeypatch, interpreted, layout, residual, inplace, dtype):
    shape, memory_format, channel_dim = LAYOUTS[layout]
    source = random_tensor(shape, dtype, memory_format).requires_grad_()
    weight = random_tensor((1, 1, 3), dtype).requires_grad_()
    shortcut = random_tensor(shape, dtype, memory_format).requires_grad_() if residual else None
    grad = random_tensor(shape, dtype)
    options = (weight, shortcut, None, residual, inplace, "zeros", "sigmoid", channel_dim)
    _prepare(monkeypatch, interpreted, source * 1.0, options, grad)

    branch = source * 1.0
    out = prepared_calls.run(branch, *options)
    assert "TritonLaunches" in _node_name(out)
    assert (out is branch) == inplace  # a tail overwrites its branch where the layer asks
    out.backward(grad)
    if interpreted is not None:
        assert interpreted.kernels == ["channel_reduce_kernel", "channel_affine_kernel"] * 2

    x_ref, w_ref = source.detach().double().requires_grad_(), weight.detach().double().requires_grad_()
    expected = eca_reference(x_ref, w_ref, channel_dim=channel_dim)
    if residual:
        id_ref = shortcut.detach().double().requires_grad_()
        expected = torch.relu(expected + id_ref)
    expected.backward(grad.double())
    tolerance = TOLERANCES[dtype]
    torch.testing.assert_close(out.double(), expected, **tolerance)
    torch.testing.assert_close(source.grad.double(), x_ref.grad, **tolerance)
    torch.testing.assert_close(weight.grad.double(), w_ref.grad, rtol=tolerance["rtol"], atol=1e-4)
    if residual:
        torch.testing.assert_close(shortcut.grad.double(), id_ref.grad, **tolerance)


def test_training_node_without_an_input_gradient_computes_the_kernels_gradient(monkeypatch, interpreted):
    # Only the ECA kernel requires grad: the node's backward makes the fused reduction and leaves
    # the kernel's gradient to Python (ecanet.ops.triton_kernels.weight_gradient).
    shape, memory_format, channel_dim = LAYOUTS["channels-last"]
    x = random_tensor(shape, torch.float32, memory_format)
    weight = random_tensor((1, 1, 5), torch.float32).requires_grad_()
    grad = random_tensor(shape, torch.float32)
    options = (weight, None, None, False, False, "zeros", "sigmoid", channel_dim)
    _prepare(monkeypatch, interpreted, x, options, grad)
    out = prepared_calls.run(x, *options)
    assert "TritonLaunches" in _node_name(out)
    out.backward(grad)
    if interpreted is not None:
        assert interpreted.kernels == ["channel_reduce_kernel", "channel_affine_kernel", "channel_reduce_kernel"]
    w_ref = weight.detach().double().requires_grad_()
    eca_reference(x.double(), w_ref, channel_dim=channel_dim).backward(grad.double())
    torch.testing.assert_close(weight.grad.double(), w_ref.grad, rtol=1e-5, atol=1e-4)


def test_training_node_leaves_an_unaligned_input_to_the_python_path(monkeypatch, interpreted):
    # Triton compiled the kernels for 16-byte aligned addresses: an input 4 bytes further on has
    # the prepared call's key, but the node declines it (the Python Function takes it, and
    # Triton specialises its launches anew).
    shape, _, channel_dim = LAYOUTS["channels-first"]
    weight = random_tensor((1, 1, 3), torch.float32).requires_grad_()
    grad = random_tensor(shape, torch.float32)
    options = (weight, None, None, False, False, "zeros", "sigmoid", channel_dim)
    _prepare(monkeypatch, interpreted, random_tensor(shape, torch.float32).requires_grad_() * 1.0, options, grad)
    (prepared,) = prepared_calls._prepared.values()
    node = triton_training.training_node(prepared.training.plans, False, "zeros", "sigmoid", channel_dim)
    x = random_tensor(shape, torch.float32)
    unaligned = torch.empty(x.numel() + 1, device=x.device)[1:].view(shape).copy_(x).requires_grad_()
    aligned = x.clone().requires_grad_()
    assert node(unaligned, weight, None, False) is None
    assert "TritonLaunches" in _node_name(node(aligned, weight, None, False))
