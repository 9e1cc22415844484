"""Training calls on CUDA tensors as one C++ autograd node that launches Triton's compiled kernels itself.

On a GPU an eager training call costs what the host needs to issue it. A prepared call
(:mod:`ecanet.ops.prepared_calls`) goes through the Python autograd Function of
:mod:`ecanet.ops.function` and ecanet's Python around four launches, and on the lent hosts that
was 390-470 us per ResNet-50 bottleneck and step, more than the GPU's own work in bfloat16
channels-last (+29.9% on the H100 against the 8% goal, ``docs/performance.md``). A C++ autograd node
that only calls back into the Python launches saves nothing (measured); one that launches the
kernels itself cost +65 us per bottleneck and step where the Python Function cost +160 us, in a
prototype timed on CPU tensors with the launches dropped.

:func:`training_node` builds that node for a prepared call once Triton has compiled its kernels
(through the Python path, on the call's first forward and backward): the extension's
``TritonTraining`` (``csrc/triton_training.h``), holding each planned launch as a
``KernelLaunch`` (``csrc/kernel_launch.h``: the compiled kernel's handle, grid, block, shared
memory and its parameters after the tensors, packed as Triton's launcher packs them). Its calls
record one ``FusedTraining`` node, the same node the compiled CPU backend records, and launch
through the CUDA driver on the current stream; they return ``None`` wherever the Python path must
run (a backward not compiled yet, an unaligned address, writes into ``x`` that need autograd's
checks). Only with the Triton releases whose launchers :mod:`ecanet.ops.triton_launch` was
checked with: with others no compiled kernel is kept, so no node is built.

Off unless ``ECANET_CUDA_TRAINING_NODE=1`` (:data:`in_use`): the node's launches have been checked
on CPU only (the packed parameters against Triton's signatures, the launches run by Triton's
interpreter on the tensors the node hands over, see the tests), not yet on a GPU.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ecanet.ops import cpu_kernels

if TYPE_CHECKING:
    from ecanet.ops.triton_kernels import BackwardPlan, TrainingPlans, _Reduction
    from ecanet.ops.triton_launch import BoundLaunch

__all__ = [
    "ENABLE_VARIABLE",
    "compiled",
    "in_use",
    "kernel_launch",
    "node_in_use",
    "planned_launches",
    "training_node",
]

ENABLE_VARIABLE = "ECANET_CUDA_TRAINING_NODE"

in_use: bool = os.environ.get(ENABLE_VARIABLE, "0") == "1"
"""Whether prepared CUDA training calls take the C++ node (read from :data:`ENABLE_VARIABLE` at import)."""


@contextlib.contextmanager
def node_in_use(enabled: bool = True) -> Iterator[None]:
    """Within the block, prepared CUDA training calls take the C++ node (or not), whatever
    :data:`ENABLE_VARIABLE` said; :data:`in_use` is restored after.

    Also a decorator: ``node_in_use()(step)`` runs each call of ``step`` with the node in use.

    Example:
        >>> from ecanet.ops import triton_training
        >>> with triton_training.node_in_use():
        ...     triton_training.in_use
        True
    """
    global in_use
    before, in_use = in_use, enabled
    try:
        yield
    finally:
        in_use = before


_NEEDS_SETTING_UP = ("global_scratch_size", "profile_scratch_size", "launch_cooperative_grid", "launch_pdl")
"""Compiled kernels' metadata that a launch would have to act on (scratch memory to allocate, launch
attributes), absent from some Triton releases; a C++ launch passes null scratch pointers and no attributes."""

_PASSED_TYPES = ("i32", "i64", "fp32", "fp64")
"""Signature types of the parameters after the tensors that a C++ launch can pass."""


def kernel_launch(compiled: Any, launch: BoundLaunch) -> Any:
    """``launch`` as the extension's ``KernelLaunch`` for its compiled kernel, or ``None`` where
    the kernel needs what a C++ launch does not give (scratch memory, clusters, cooperative or
    programmatic launches, an instrumented build, a parameter of another type).

    Args:
        compiled: the compiled kernel ``launch`` goes to (``launch.compiled``), or one standing in
            for it with the same ``function``, ``metadata`` and ``src.signature``.
        launch: a bound launch (:class:`~ecanet.ops.triton_launch.BoundLaunch`).
    """
    kernel_launch_class = cpu_kernels.entry("KernelLaunch")
    metadata, plan = compiled.metadata, launch.plan
    if (
        kernel_launch_class is None
        or metadata.num_ctas != 1
        or any(getattr(metadata, name, 0) for name in _NEEDS_SETTING_UP)
        or "gsan" in getattr(metadata, "instrumentation_mode", "")
    ):
        return None
    types = list(compiled.src.signature.values())
    tensors = len(types) - len(plan.scalars) - len(plan.constexprs)
    if tensors < 1 or not all(kind.startswith("*") for kind in types[:tensors]):
        return None
    scalar_types = types[tensors : tensors + len(plan.scalars)]
    passed = [(kind, value) for kind, value in zip(scalar_types, plan.scalars, strict=True) if kind != "constexpr"]
    if any(kind not in _PASSED_TYPES for kind, _ in passed):
        return None
    return kernel_launch_class(
        compiled.function,
        plan.programs,
        32 * metadata.num_warps,
        metadata.shared,
        ["pointer"] * tensors + [kind for kind, _ in passed],
        [float(value) for _, value in passed],
    )


def _compiled_launch(launch: BoundLaunch) -> Any:
    compiled = launch.compiled
    return None if compiled is None else kernel_launch(compiled, launch)


def _reduction(reduction: _Reduction) -> Any:
    launch = _compiled_launch(reduction.launch)
    if launch is None:
        return None
    return cpu_kernels.entry("ChannelReduction")(launch, reduction.partial_shape, reduction.divisor or 0)


def _backward(plan: BackwardPlan) -> Any:
    reduction = _reduction(plan.reduction)
    input_gradient = _compiled_launch(plan.input_gradient)
    if reduction is None or input_gradient is None:
        return None
    return cpu_kernels.entry("TritonBackward")(reduction, input_gradient, plan.partial_shape)


def planned_launches(plans: TrainingPlans) -> tuple[BoundLaunch, ...]:
    """The bound launches a node is built from: the forward's pooling and rescale, then each
    backward's reduction and input gradient (the output overwrote the input or not)."""
    return (
        *_forward_launches(plans),
        *_backward_launches(plans.backward),
        *_backward_launches(plans.backward_in_place),
    )


def compiled(plans: TrainingPlans) -> bool:
    """Whether Triton has compiled the forward's kernels and those of one backward, so that
    :func:`training_node` can build a node (a few attribute reads: asked on every call until then)."""
    return _all_compiled(_forward_launches(plans)) and (
        _all_compiled(_backward_launches(plans.backward)) or _all_compiled(_backward_launches(plans.backward_in_place))
    )


def _forward_launches(plans: TrainingPlans) -> tuple[BoundLaunch, BoundLaunch]:
    return plans.forward.pool.launch, plans.forward.rescale


def _backward_launches(plan: BackwardPlan) -> tuple[BoundLaunch, BoundLaunch]:
    return plan.reduction.launch, plan.input_gradient


def _all_compiled(launches: tuple[BoundLaunch, ...]) -> bool:
    return all(launch.compiled is not None for launch in launches)


def training_node(plans: TrainingPlans, relu: bool, padding: str, gate: str, channel_dim: int) -> Any:
    """The extension's ``TritonTraining`` for a prepared call's bound training plans, once they
    are :func:`compiled` (with each backward whose kernels are), or ``None`` where the extension is
    not built or a kernel cannot be launched from C++ (see the module docstring).

    Args:
        plans: the prepared call's plans (:func:`ecanet.ops.triton_kernels.training_plans`, bound).
        relu, padding, gate, channel_dim: the call's options.

    Returns:
        A callable ``node(x, weight, identity, inplace)``: the call's result recorded as one C++
        autograd node, or ``None`` where the Python path must run.
    """
    node_class = cpu_kernels.entry("TritonTraining")
    if node_class is None or not compiled(plans):
        return None
    pool = _reduction(plans.forward.pool)
    rescale = _compiled_launch(plans.forward.rescale)
    if pool is None or rescale is None:
        return None
    backward, backward_in_place = _backward(plans.backward), _backward(plans.backward_in_place)
    if backward is None and backward_in_place is None:
        return None
    return node_class(pool, rescale, backward, backward_in_place, relu, padding, gate, channel_dim)
