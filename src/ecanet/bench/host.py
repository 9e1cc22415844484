"""What ECA costs a GPU's host, measured on any machine: ECA's CUDA route up to Triton's launcher.

On a GPU an eager ECA call costs mostly what the host needs to issue it (see
``docs/performance.md``, GPU): the checks, the prepared call's key, the kernels' arguments and two
launches, against the plain block's BatchNorm, addition and ReLU. :func:`cuda_route_without_launches`
sends CPU tensors down that route (:func:`ecanet.ops.dispatch.takes_prepared_calls`, the Triton
backend) and on through :class:`ecanet.ops.triton_launch.PlannedLaunch`'s direct launches as
if the tensors were on GPU 0, up to the compiled kernel's launcher, which is replaced by a no-op.
So the Python a GPU's host runs per call (all but Triton's own launcher and the driver) can be
timed without a GPU, and compared in the same process with the plain block (whose ATen
operators do run, on tiny CPU tensors). ECA's outputs are not computed there: only the time means
anything. Needs Triton installed (its kernels are planned, never compiled).

Training steps have a third candidate, ``function``: the plain block with its tail (addition and
ReLU) inside a minimal ``torch.autograd.Function``. ECA's fused training tail is such a Function,
so that row is the part of ECA's host time that its Python can never remove. The fourth,
``eca-node``, is ECA with that Function replaced by the C++ node that launches the kernels itself
(:mod:`ecanet.ops.triton_training`; its launches dropped after their arguments are packed).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import itertools
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import torch

from ecanet.bench.report import BenchRow, rows_from_stats
from ecanet.bench.timing import time_side_by_side
from ecanet.models.resnet import Bottleneck
from ecanet.ops import cpu_kernels, dispatch, prepared_calls, triton_training

__all__ = [
    "HOST_BLOCK_SHAPE",
    "CompiledStandIn",
    "benchmark_host_block",
    "cuda_route_without_launches",
    "cuda_signature",
    "cuda_source",
]

HOST_BLOCK_SHAPE = (8, 256, 2, 2)
"""A ResNet-50 bottleneck's input (256 channels, 64 inside): its maps are tiny, so that the plain
block's CPU operators cost about what their launches cost a GPU's host."""


@contextlib.contextmanager
def cuda_route_without_launches() -> Iterator[None]:
    """Within the block, CPU tensors take the route of CUDA tensors, and Triton launches nothing.

    Raises:
        RuntimeError: Triton is not installed.

    Example:
        >>> with cuda_route_without_launches():
        ...     dispatch.takes_prepared_calls(torch.zeros(1))
        True
        >>> dispatch.takes_prepared_calls(torch.zeros(1))
        False
    """
    if importlib.util.find_spec("triton") is None:
        raise RuntimeError("the host benchmark plans ECA's Triton launches: it needs Triton installed")
    from ecanet.ops import triton_launch

    stand_ins: set[Any] = set()  # launchers holding stand-ins for compiled kernels, emptied of them after

    def compiled_without_launching(plan: Any, args: tuple) -> CompiledStandIn:
        stand_ins.add(plan.launcher)
        return CompiledStandIn(cuda_signature(plan.launcher.kernel, (*args, *plan.scalars), plan.constexprs))

    launch_through = cpu_kernels.entry("launch_through")
    with contextlib.ExitStack() as undo:
        undo.callback(_forget_stand_ins, stand_ins)
        if launch_through is not None:  # the C++ training node's launches (ecanet.ops.triton_training)
            launch_through("nowhere")
            undo.callback(launch_through, "driver")
        # Calls prepared on the route keep bound launches that hold a stand-in: forgotten after it.
        undo.callback(_forget_calls_prepared_since, set(prepared_calls._prepared))
        for owner, name, replacement in (
            (dispatch, "takes_prepared_calls", _always),
            (dispatch, "kernels_for", _triton_backend_for),
            (triton_launch, "_cuda_index", _gpu_zero),
            (triton_launch, "_one_device", _always),
            (triton_launch, "_stream_of", _no_stream),
            (triton_launch, "_compile_and_launch", compiled_without_launching),
        ):
            undo.callback(setattr, owner, name, getattr(owner, name))
            setattr(owner, name, replacement)
        yield


def _always(*args: object) -> bool:
    return True


def _triton_backend_for(x: torch.Tensor) -> object:
    return dispatch._triton_backend()


def _gpu_zero(t: torch.Tensor) -> int:
    return 0


def _no_stream() -> Callable[[int], int]:
    return _null_stream


def _null_stream(index: int) -> int:
    return 0


class CompiledStandIn:
    """Stands in for a compiled kernel on a machine without a GPU: its launcher takes the
    arguments and launches nothing; its ``src.signature`` is the one Triton's compiler gets for
    the launch on a GPU (:func:`cuda_signature`), its ``metadata`` that of a kernel of four warps
    with nothing more to set up, so a C++ launch can be planned from it
    (:func:`ecanet.ops.triton_training.kernel_launch`). Each has a ``function`` handle of its own.

    Example:
        >>> stand_in = CompiledStandIn({"x_ptr": "*fp32", "n": "i32"})
        >>> stand_in.metadata.num_warps, stand_in.function > 0
        (4, True)
    """

    packed_metadata = None
    metadata = SimpleNamespace(
        num_warps=4,
        num_ctas=1,
        shared=0,
        global_scratch_size=0,
        profile_scratch_size=0,
        launch_cooperative_grid=False,
        launch_pdl=False,
    )
    _handles = itertools.count(1)

    def __init__(self, signature: dict[str, str]) -> None:
        self.src = SimpleNamespace(signature=signature)
        self.function = next(CompiledStandIn._handles)

    @staticmethod
    def run(*args: object) -> None:
        return None


def cuda_signature(kernel: Any, args: tuple, constexprs: dict[str, Any]) -> dict[str, str]:
    """The signature Triton's compiler gets for a launch of ``kernel`` on ``args`` (then the
    ``constexprs``) on an NVIDIA GPU: each parameter's type by name, ``"constexpr"`` for the
    constexprs and for the arguments Triton specialises into constants (an integer equal to 1).
    Worked out as Triton's launch does it (its argument binder, with the CUDA backend), with no GPU.

    Args:
        kernel: a ``@triton.jit`` function (interpreted too, under ``TRITON_INTERPRET=1``).
        args: the arguments passed by position (tensors of any device, then scalars).
        constexprs: the constexpr parameters by name.

    Example:
        >>> from ecanet.ops.triton_jit import channel_reduce_kernel
        >>> x = torch.zeros(2, 8, 4)
        >>> options = {"PRODUCT": False, "RELU": False, "SUBTRACT": False, "BLOCK_C": 8, "BLOCK_S": 4}
        >>> args = (x, x, x, x, x, x, 8, 4, 32, 4, 1, 1, 1, 0.25)
        >>> signature = cuda_signature(channel_reduce_kernel, args, options)
        >>> signature["x_ptr"], signature["C"], signature["ss"], signature["scale"], signature["BLOCK_C"]
        ('*fp32', 'i32', 'constexpr', 'fp32', 'constexpr')
    """
    return cuda_source(kernel, args, constexprs).signature


def cuda_source(kernel: Any, args: tuple, constexprs: dict[str, Any]) -> Any:
    """What Triton's compiler gets for a launch of ``kernel`` on ``args`` on an NVIDIA GPU, as a
    ``triton.compiler.ASTSource``: the signature (:func:`cuda_signature`), the constants (constexprs
    and integers equal to 1) and which pointers and integers are multiples of 16, so that
    ``triton.compile`` on this machine compiles the specialisation the GPU would.

    Args:
        kernel, args, constexprs: as for :func:`cuda_signature`.

    Example:
        >>> from ecanet.ops.triton_jit import channel_reduce_kernel
        >>> x = torch.zeros(2, 8, 4)
        >>> options = {"PRODUCT": False, "RELU": False, "SUBTRACT": False, "BLOCK_C": 8, "BLOCK_S": 4}
        >>> source = cuda_source(channel_reduce_kernel, (x, x, x, x, x, x, 8, 4, 32, 4, 1, 1, 1, 0.25), options)
        >>> source.attrs[(0,)], source.attrs[(7,)]  # x is aligned; S = 4 is not a multiple of 16
        ([['tt.divisibility', 16]], [])
    """
    from triton.compiler import ASTSource

    jit_function, backend, binder = _cuda_binder(kernel.fn)
    bound, specialization, _ = binder(*args, **constexprs)
    values = list(bound.values())
    kinds = [kind for kind, _ in specialization]
    return ASTSource(
        fn=jit_function,
        signature={parameter.name: kind for parameter, kind in zip(jit_function.params, kinds, strict=True)},
        constexprs={(i,): values[i] for i, kind in enumerate(kinds) if kind == "constexpr"},
        attrs={
            (i,): backend.parse_attr(key)
            for i, (kind, key) in enumerate(specialization)
            if kind != "constexpr" and isinstance(key, str)
        },
    )


@functools.cache
def _cuda_binder(fn: Callable[..., Any]) -> tuple[Any, Any, Callable[..., Any]]:
    """The kernel compiled from ``fn``, the CUDA backend for sm_90, and Triton's argument binder for them."""
    from triton.backends.compiler import GPUTarget
    from triton.backends.nvidia.compiler import CUDABackend
    from triton.runtime.jit import JITFunction, create_function_from_signature

    kernel = JITFunction(fn)
    backend = CUDABackend(GPUTarget("cuda", 90, 32))
    return kernel, backend, create_function_from_signature(kernel.signature, kernel.params, backend)


def _forget_calls_prepared_since(before: set[tuple]) -> None:
    for key in [key for key in prepared_calls._prepared if key not in before]:
        del prepared_calls._prepared[key]


def _forget_stand_ins(launchers: set[Any]) -> None:
    for launcher in launchers:
        for key in [key for key, kernel in launcher._compiled.items() if isinstance(kernel, CompiledStandIn)]:
            del launcher._compiled[key]


def benchmark_host_block(
    mode: str = "inference",
    *,
    rounds: int = 15,
    warmup: int = 2,
    min_round_seconds: float = 0.05,
) -> list[BenchRow]:
    """Times a ResNet-50 bottleneck with and without ECA on :func:`cuda_route_without_launches`.

    ``"inference"``: an eval-mode forward without autograd (ECA's calls prepared from the second
    one on, the last BatchNorm inside ECA's rescale). ``"training"``: a train-mode forward and
    backward. Channels-last float32, input :data:`HOST_BLOCK_SHAPE`. Each round repeats the call
    for at least ``min_round_seconds``; the rows' ``extra_us`` is what ECA adds to the host's
    time per block.

    Args:
        mode: ``"inference"`` or ``"training"``.
        rounds, warmup: as for :func:`ecanet.bench.timing.time_side_by_side`.
        min_round_seconds: time per candidate and round.

    Example:
        >>> rows = benchmark_host_block(rounds=1, warmup=0, min_round_seconds=0.0)
        >>> [row.candidate for row in rows], rows[1].group
        (['none', 'eca'], 'host')
        >>> [row.candidate for row in benchmark_host_block("training", rounds=1, warmup=0, min_round_seconds=0.0)]
        ['none', 'eca', 'function', 'eca-node']
    """
    if mode not in ("inference", "training"):
        raise ValueError(f"mode must be 'inference' or 'training', got {mode!r}")
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(HOST_BLOCK_SHAPE, generator=generator).contiguous(memory_format=torch.channels_last)
    grad = torch.randn(HOST_BLOCK_SHAPE, generator=generator).contiguous(memory_format=torch.channels_last)
    channels, width = HOST_BLOCK_SHAPE[1], HOST_BLOCK_SHAPE[1] // Bottleneck.expansion
    candidates: dict[str, Callable[[], object]] = {}
    blocks = (("none", Bottleneck, None), ("eca", Bottleneck, "eca"))
    if mode == "training":
        blocks += (("function", _BottleneckWithFunctionTail, None),)
        if cpu_kernels.available():
            blocks += (("eca-node", Bottleneck, "eca"),)
    for name, kind, attention in blocks:
        torch.manual_seed(0)
        block = kind(channels, width, attention=attention).to(memory_format=torch.channels_last)
        block.train(mode == "training")
        candidates[name] = _forward(block, x) if mode == "inference" else _step(block, x, grad)
    if "eca-node" in candidates:
        candidates["eca-node"] = triton_training.node_in_use()(candidates["eca-node"])
    with cuda_route_without_launches(), triton_training.node_in_use(False):
        stats = time_side_by_side(candidates, rounds=rounds, warmup=warmup, min_round_seconds=min_round_seconds)
    case = f"bottleneck {'x'.join(map(str, HOST_BLOCK_SHAPE))}"
    return rows_from_stats("host", case, "channels_last", "float32", mode, stats, "none")


def _forward(block: torch.nn.Module, x: torch.Tensor) -> Callable[[], object]:
    def forward() -> object:
        with torch.no_grad():
            return block(x)

    return forward


def _step(block: torch.nn.Module, x: torch.Tensor, grad: torch.Tensor) -> Callable[[], object]:
    def step() -> None:
        block(x).backward(grad)

    return step


class _TailInFunction(torch.autograd.Function):
    """The plain tail ``relu(y + identity)`` (in place, as the block does it) as an autograd Function."""

    @staticmethod
    def forward(ctx: Any, y: torch.Tensor, identity: torch.Tensor) -> torch.Tensor:
        out = y.add_(identity).relu_()
        ctx.mark_dirty(y)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        (out,) = ctx.saved_tensors
        masked = grad * (out > 0)
        return masked, masked


class _BottleneckWithFunctionTail(Bottleneck):
    """The plain bottleneck, its tail run through :class:`_TailInFunction`."""

    def _tail(
        self,
        y: torch.Tensor,
        norm: torch.nn.Module,
        identity: torch.Tensor,
        producer: torch.nn.Module,
        descriptor: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return _TailInFunction.apply(norm(y), identity)
