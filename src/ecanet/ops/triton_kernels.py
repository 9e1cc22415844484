"""The fast path's kernels in Triton, for CUDA tensors, as :class:`ecanet.ops.triton_backend.TritonKernels` uses them.

Two kernels make the passes over large tensors, each seeing them as ``(N, C, S)`` through their
strides (:class:`Geometry`; no view is made), so channels-first and channels-last memory share one
code path:

- a **channel reduction**, ``sum_s x`` (the pooled descriptor) or ``sum_s g * x`` (the gate
  gradient, with the ReLU mask applied on the way, and ``x`` recovered as output minus shortcut
  after an in-place block tail), accumulated in float32 (float64 for float64);
- a **per-channel affine pass**, ``act(x * a[c] + b[c] + identity)``: the rescale, with ECA's gate
  computed inside the kernel from the descriptor (the k-tap channel convolution and the sigmoid),
  and the input gradient, with the gate's backward computed inside it from the gates' gradients.
  So the forward and the backward are two launches each, whatever k, and no launch works on the
  tiny ``(N, C)`` tensors alone.

A third works out the kernel's gradient alone when no input gradient is wanted (:func:`weight_gradient`).

Tiles are long along whichever axis is contiguous and sized to the data (a 7x7 map does not waste
four fifths of a 256-wide tile). Grids are one-dimensional, so no axis meets CUDA's 65535 limit,
and offsets are 64-bit. A reduction with too few ``(sample, channel block)`` programs to fill the
GPU splits its positions among several programs that write partial sums, added up afterwards
(deterministic, unlike atomics). Kernels are compiled on first use, which is also when
``TRITON_INTERPRET=1`` is read: set it before the first call to run them on CPU tensors through
Triton's interpreter (how the test suite checks them on machines without a GPU).
"""

from __future__ import annotations

import functools
import importlib
import math
from types import ModuleType
from typing import NamedTuple

import torch
from torch import Tensor

from ecanet.ops.frozen_norm import FrozenNorm
from ecanet.ops.triton_launch import BoundLaunch, KernelLauncher, PlannedLaunch
from ecanet.ops.views import required_channel_geometry, same_layout

__all__ = [
    "BackwardPlan",
    "ForwardPlan",
    "Geometry",
    "ReductionPlan",
    "SplitPolicy",
    "TrainingPlans",
    "accumulate_dtype",
    "backward_plan",
    "channel_mean",
    "eca_backward",
    "eca_forward",
    "forward_plan",
    "geometry",
    "gpu_split_policy",
    "reduction_plan",
    "reduction_splits",
    "tile",
    "training_plans",
    "weight_gradient",
]

_TILE_ELEMENTS = 2048
"""Elements per program tile (16 per thread with Triton's default four warps)."""


class SplitPolicy(NamedTuple):
    """When a reduction splits its positions (:func:`reduction_splits`)."""

    target: int
    """Programs that keep the device's memory busy."""
    min_blocks: int
    """Fewest tiles per part."""


_INTERPRETER_SPLITS = SplitPolicy(target=8, min_blocks=1)
"""When reductions split on CPU tensors (Triton's interpreter): so that the test suite's longer
inputs (one to three programs) split, and the partial-sum path is checked there too."""

_GATES = {"sigmoid": 0, "hard_sigmoid": 1}


@functools.cache
def _kernels() -> ModuleType:
    """The ``@triton.jit`` kernels, imported on first use (see :mod:`ecanet.ops.triton_jit`)."""
    return importlib.import_module("ecanet.ops.triton_jit")


class Geometry(NamedTuple):
    """Sizes and strides of a tensor seen as ``(N, C, S)``, all the kernels need to walk its memory.

    Example:
        >>> geometry(torch.empty(8, 2048, 7, 7).to(memory_format=torch.channels_last), 1)
        Geometry(n=8, c=2048, s=49, sn=100352, sc=1, ss=2048)
    """

    n: int
    c: int
    s: int
    sn: int
    sc: int
    ss: int

    @property
    def channels_inner(self) -> bool:
        """Whether channels are the contiguous axis (channels-last memory, tokens)."""
        return self.sc == 1 and self.ss != 1


def geometry(x: Tensor, channel_dim: int, *others: Tensor | None) -> Geometry:
    """The :class:`Geometry` of ``x`` seen as ``(N, C, S)`` (:func:`ecanet.ops.views.channel_geometry`),
    which every other given tensor must share (the dispatcher lays every operand out like ``x``)."""
    for other in others:
        if other is not None and not same_layout(other, x):
            raise RuntimeError(
                f"Triton ECA kernels need operands with one layout, got strides {x.stride()} and {other.stride()}"
            )
    return Geometry(*required_channel_geometry(x, channel_dim))


@functools.lru_cache(maxsize=4096)
def tile(c: int, s: int, channels_inner: bool, channel_run: int = 256) -> tuple[int, int]:
    """Tile ``(BLOCK_C, BLOCK_S)`` for ``(N, C, S)`` memory: long along the contiguous axis, no
    longer than that axis (rounded up to a power of two), about :data:`_TILE_ELEMENTS` in all.

    Args:
        c, s: channels and positions.
        channels_inner: channels are the contiguous axis (:attr:`Geometry.channels_inner`).
        channel_run: most channels in a tile of channels-last memory. The reductions take 64 (one
            128-byte line of bfloat16), so that their ``(sample, channel block)`` programs fill the
            GPU without splitting positions (which costs one more launch to add the parts up).

    Example:
        >>> tile(512, 3136, False)  # channels-first 56x56: whole 256-position rows
        (8, 256)
        >>> tile(2048, 49, False)  # channels-first 7x7: rows of 49 in 64 lanes
        (32, 64)
        >>> tile(2048, 49, True)  # channels-last: runs of channels
        (256, 8)
        >>> tile(2048, 49, True, channel_run=64)
        (64, 32)
    """
    if channels_inner:
        block_c = min(channel_run, _next_power_of_2(c))
        return block_c, max(1, _TILE_ELEMENTS // block_c)
    block_s = min(256, _next_power_of_2(s))
    return max(1, _TILE_ELEMENTS // block_s), block_s


def _next_power_of_2(size: int) -> int:
    """The smallest power of two ``>= size`` (at least 1), as Triton's block sizes must be."""
    return 1 << max(0, size - 1).bit_length()


def reduction_splits(programs: int, position_blocks: int, target: int, min_blocks: int) -> tuple[int, int]:
    """How many programs share one ``(sample, channel block)``'s positions: ``(splits, blocks_per_split)``.

    Splits only as far as needed to reach ``target`` programs, into parts of at least
    ``min_blocks`` tiles (a short part costs more in the launch that adds the parts up than its
    program wins), and never into empty splits.

    Args:
        programs: ``(sample, channel block)`` pairs.
        position_blocks: tiles along ``S``.
        target: programs that keep the device's memory busy.
        min_blocks: fewest tiles per part.

    Example:
        >>> reduction_splits(64 * 4, 98, 528, 16)  # 64x256x56x56 channels-last, 132 SMs
        (3, 33)
        >>> reduction_splits(64 * 8, 25, 528, 16)  # 64x512x28x28: parts would be too short
        (1, 25)
        >>> reduction_splits(8 * 4, 98, 528, 16)  # batch 8
        (6, 17)
    """
    wanted = max(1, min(math.ceil(target / max(1, programs)), position_blocks // max(1, min_blocks)))
    blocks_per_split = math.ceil(position_blocks / wanted) if position_blocks else 0
    splits = math.ceil(position_blocks / blocks_per_split) if blocks_per_split else 1
    return splits, blocks_per_split


class ReductionPlan(NamedTuple):
    """How a channel reduction covers a geometry: its tile, channel blocks and splits of the positions."""

    block_c: int
    block_s: int
    c_blocks: int
    splits: int
    blocks_per_split: int


@functools.lru_cache(maxsize=4096)
def _reduction_plan(shape: Geometry, policy: SplitPolicy) -> ReductionPlan:
    block_c, block_s = tile(shape.c, shape.s, shape.channels_inner, 64)
    c_blocks = -(-shape.c // block_c)
    splits, blocks_per_split = reduction_splits(shape.n * c_blocks, -(-shape.s // block_s), *policy)
    return ReductionPlan(block_c, block_s, c_blocks, splits, blocks_per_split)


def reduction_plan(shape: Geometry, device: torch.device) -> ReductionPlan:
    """The channel reductions' plan for ``shape`` on ``device`` (on CPU tensors, Triton's interpreter).

    Example:
        >>> reduction_plan(Geometry(8, 256, 3136, 802816, 3136, 1), torch.device("cpu"))
        ReductionPlan(block_c=8, block_s=256, c_blocks=32, splits=1, blocks_per_split=13)
    """
    return _reduction_plan(shape, _split_policy(device))


def gpu_split_policy(multiprocessors: int) -> SplitPolicy:
    """How reductions split on a GPU with ``multiprocessors`` SMs: four programs per SM, parts of
    at least 16 tiles.

    Each program keeps a 2048-element tile of loads in flight, and one or two per SM leave most
    of the memory bandwidth unused. Measured on an H200 (132 SMs), the kernels alone at batch 64,
    bfloat16 channels-last: at 56x56 with 256 channels (256 programs of 98 tiles) the pooling took
    88 us unsplit and 35 us in three parts, the backward's fused reduction 196 and 116 us; at
    28x28 with 512 channels (25 tiles) two parts gained nothing (pooling and backward together
    100 us either way), and at 7x7 two parts doubled both. float32 channels-first reductions have
    2048 programs or more at batch 64 and did not split.

    Example:
        >>> gpu_split_policy(132)
        SplitPolicy(target=528, min_blocks=16)
    """
    return SplitPolicy(4 * multiprocessors, 16)


@functools.cache
def _device_split_policy(device_index: int) -> SplitPolicy:
    return gpu_split_policy(torch.cuda.get_device_properties(device_index).multi_processor_count)


def _split_policy(device: torch.device) -> SplitPolicy:
    if device.type == "cuda":
        return _device_split_policy(device.index if device.index is not None else torch.cuda.current_device())
    return _INTERPRETER_SPLITS


def accumulate_dtype(dtype: torch.dtype) -> torch.dtype:
    """What the kernels sum ``dtype`` values in: float64 for float64, else float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


@functools.cache
def _launcher(name: str) -> KernelLauncher:
    return KernelLauncher(getattr(_kernels(), name))


class _Reduction(NamedTuple):
    """A channel reduction planned for a geometry (:func:`_reduction`)."""

    launch: PlannedLaunch | BoundLaunch
    partial_shape: tuple[int, ...]
    """``(N, C)``, or ``(N, splits, C)`` when positions are split (the parts are added up after)."""
    divisor: int | None
    """Divides the sums afterwards (float64 means: Triton passes a Python float as a float32 scale)."""

    def __call__(
        self,
        x: Tensor,
        other: Tensor | None = None,
        relu_out: Tensor | None = None,
        masked: Tensor | None = None,
        subtrahend: Tensor | None = None,
    ) -> Tensor:
        """``sum_s x`` (or of ``relu-masked x * other``, or ``* (other - subtrahend)``, as planned),
        times the planned scale, as ``(N, C)`` in the accumulation dtype; the masked ``x`` is stored
        to ``masked``.

        ``x`` and the others are tensors that the plan's :class:`Geometry` describes (any views of
        the same memory with the same first element would do).
        """
        partial = torch.empty(self.partial_shape, dtype=accumulate_dtype(x.dtype), device=x.device)
        self.launch(
            x,
            x if other is None else other,
            x if relu_out is None else relu_out,
            x if masked is None else masked,
            x if subtrahend is None else subtrahend,
            partial,
        )
        sums = partial if len(self.partial_shape) == 2 else partial.sum(1)
        return sums if self.divisor is None else sums / self.divisor

    def bound(self) -> _Reduction:
        """This reduction for a caller whose tensors keep their dtypes and device
        (:class:`~ecanet.ops.triton_launch.BoundLaunch`)."""
        return self._replace(launch=self.launch.bound())


@functools.lru_cache(maxsize=4096)
def _reduction(
    shape: Geometry, policy: SplitPolicy, product: bool, relu: bool, subtract: bool, scale: float, divisor: int | None
) -> _Reduction:
    plan = _reduction_plan(shape, policy)
    n, c, splits = shape.n, shape.c, plan.splits
    launch = _launcher("channel_reduce_kernel").plan(
        n * splits * plan.c_blocks,
        (c, shape.s, shape.sn, shape.sc, shape.ss, splits, plan.blocks_per_split, scale),
        {
            "PRODUCT": product,
            "RELU": relu,
            "SUBTRACT": subtract,
            "BLOCK_C": plan.block_c,
            "BLOCK_S": plan.block_s,
        },
    )
    return _Reduction(launch, (n, c) if splits == 1 else (n, splits, c), divisor)


def _mean_reduction(shape: Geometry, device: torch.device, dtype: torch.dtype) -> _Reduction:
    """The pooling pass: per-channel means (float32 and narrower: the division folded into the sum)."""
    if dtype == torch.float64:
        return _reduction(shape, _split_policy(device), False, False, False, 1.0, shape.s)
    return _reduction(shape, _split_policy(device), False, False, False, 1.0 / shape.s if shape.s else math.nan, None)


def channel_mean(x: Tensor, channel_dim: int) -> Tensor:
    """Per-channel means ``(N, C)`` of ``x`` over ``S`` in one pass (float32: the division folded into it)."""
    shape = geometry(x, channel_dim)
    return _mean_reduction(shape, x.device, x.dtype)(x)


@functools.lru_cache(maxsize=4096)
def _affine_plan(shape: Geometry) -> tuple[int, int, int]:
    """``(BLOCK_C, BLOCK_S, programs)`` of the per-channel affine pass."""
    block_c, block_s = tile(shape.c, shape.s, shape.channels_inner, 256)
    return block_c, block_s, shape.n * -(-shape.c // block_c) * -(-shape.s // block_s)


@functools.lru_cache(maxsize=4096)
def _affine_launch(
    shape: Geometry,
    weight_shape: tuple[int, ...],
    padding: str,
    gate: str,
    input_gradient: bool,
    store_gates: bool,
    norm: bool,
    inplace: bool,
    identity: bool,
    relu: bool,
) -> PlannedLaunch:
    """The per-channel affine pass planned for a geometry, an ECA kernel's shape and the options
    (see :func:`_affine`). Without ``norm`` the norm's ``eps`` is planned too (unused, 0), so that
    every argument passed per launch is a tensor (as a :class:`~ecanet.ops.triton_launch.BoundLaunch` takes them)."""
    block_c, block_s, programs = _affine_plan(shape)
    sizes = (shape.c, shape.s, shape.sn, shape.sc, shape.ss)
    return _launcher("channel_affine_kernel").plan(
        programs,
        sizes if norm else (0.0, *sizes),
        {
            "INPUT_GRADIENT": input_gradient,
            "STORE_GATES": store_gates,
            "NORM": norm,
            "INPLACE": inplace,
            "K": weight_shape[-1],
            "PER_CHANNEL": weight_shape[0] > 1,
            "CIRCULAR": padding == "circular",
            "GATE": _GATES[gate],
            "HAS_IDENTITY": identity,
            "RELU": relu,
            "CHANNELS_INNER": shape.channels_inner,
            "BLOCK_C": block_c,
            "BLOCK_S": block_s,
        },
    )


def _affine(
    launch: PlannedLaunch | BoundLaunch,
    x: Tensor,
    a: Tensor,
    b: Tensor | None,
    identity: Tensor | None,
    out: Tensor,
    weight: Tensor,
    side_out: Tensor | None,
    mean: Tensor | None = None,
    norm: FrozenNorm | None = None,
) -> None:
    """Writes ``act(x * a + b + identity)`` into ``out`` (tensors as for :class:`_Reduction`; the options
    are ``launch``'s, :func:`_affine_launch`).

    Without ``b`` (the forward), ``a`` holds the pooled means: the gate is computed from them and
    stored to ``side_out`` (or not kept, without one); with ``norm``, ``x`` and the means are the
    norm's input and the kernel rescales ``norm(x)``. With ``b`` (the input gradient), ``a`` holds
    the gates and ``b`` their gradients (times the gates ``inplace``): the shift ``dL/dmean / S`` is
    computed from them, and the kernel's gradient from them and ``mean`` is stored to ``side_out``
    (see :func:`eca_backward`).
    """
    launch(
        x,
        a,
        a if b is None else b,
        x if identity is None else identity,
        out,
        weight,
        a if side_out is None else side_out,
        a if mean is None else mean,
        *((a, a, a, a) if norm is None else norm),
    )


def _dense(t: Tensor, dtype: torch.dtype) -> Tensor:
    """``t`` as a contiguous tensor of ``dtype``, without an operator call when it already is one
    (each call is host time on a GPU)."""
    return t if t.dtype == dtype and t.is_contiguous() else t.to(dtype).contiguous()


class ForwardPlan(NamedTuple):
    """ECA's forward (or a block tail's) as two launches planned for one geometry and set of options
    (:func:`forward_plan`): the pooled mean, then ``act(x * gate + identity)`` with the gate worked
    out inside the rescale.

    Every tile of the rescale computes its channels' gates (:func:`ecanet.ops.channel_gate.channel_gate`
    of the mean) from the k neighbouring means, so no launches run on the tiny ``(N, C)`` tensors.
    A plan holds everything but the tensors, so a caller that keeps it (a prepared call,
    :mod:`ecanet.ops.prepared_calls`) spends no host time on tiles, grids and constexprs again.
    """

    pool: _Reduction
    rescale: PlannedLaunch | BoundLaunch
    rescale_after_norm: PlannedLaunch
    """The rescale applying an eval-mode BatchNorm to its input first."""
    keep_gate: bool

    def __call__(
        self,
        x: Tensor,
        weight: Tensor,
        identity: Tensor | None,
        out: Tensor,
        known_mean: Tensor | None = None,
        norm: FrozenNorm | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """Runs the forward (arguments as for :func:`eca_forward`)."""
        mean = self.pool(x) if known_mean is None else known_mean.contiguous()
        gates = torch.empty_like(mean) if self.keep_gate else None
        rescale = self.rescale if norm is None else self.rescale_after_norm
        _affine(rescale, x, mean, None, identity, out, weight.contiguous(), gates, None, norm)
        return mean, gates

    def bound(self) -> ForwardPlan:
        """This plan for a caller whose tensors keep their dtypes and device
        (:class:`~ecanet.ops.triton_launch.BoundLaunch`); the rescale after a norm stays keyed
        in full (the norm's tensors are the caller's to change)."""
        return self._replace(pool=self.pool.bound(), rescale=self.rescale.bound())


@functools.lru_cache(maxsize=4096)
def forward_plan(
    shape: Geometry,
    device: torch.device,
    dtype: torch.dtype,
    weight_shape: tuple[int, ...],
    relu: bool,
    padding: str,
    gate: str,
    identity: bool,
    keep_gate: bool,
) -> ForwardPlan:
    """The :class:`ForwardPlan` of calls on tensors of ``shape``, ``device`` and ``dtype`` with an ECA
    kernel of ``weight_shape``, with or without an ``identity`` (arguments as for :func:`eca_forward`).
    """
    options = (shape, weight_shape, padding, gate, False, keep_gate)
    return ForwardPlan(
        _mean_reduction(shape, device, dtype),
        _affine_launch(*options, False, False, identity, relu),
        _affine_launch(*options, True, False, identity, relu),
        keep_gate,
    )


def eca_forward(
    shape: Geometry,
    x: Tensor,
    weight: Tensor,
    identity: Tensor | None,
    relu: bool,
    padding: str,
    gate: str,
    out: Tensor,
    known_mean: Tensor | None = None,
    keep_gate: bool = True,
    norm: FrozenNorm | None = None,
) -> tuple[Tensor, Tensor | None]:
    """ECA (or a block tail) in two launches: the pooled mean, then ``act(x * gate + identity)``
    into ``out`` with the gate worked out inside the rescale (see :class:`ForwardPlan`).

    Args:
        shape: the :class:`Geometry` shared by ``x``, ``identity`` and ``out``.
        x: input.
        weight: ECA kernel ``[1 or C, 1, k]``.
        identity: shortcut, or ``None``.
        relu: apply ReLU at the end.
        padding: ``"zeros"`` or ``"circular"``.
        gate: ``"sigmoid"`` or ``"hard_sigmoid"``.
        out: destination (may be ``x``).
        known_mean: ``x``'s pooled mean ``(N, C)`` if already known; the pooling pass is skipped.
        keep_gate: store the gate for a backward; without, it is computed but not kept (one
            allocation fewer at inference).
        norm: an eval-mode BatchNorm that ``x`` (and ``known_mean``) comes before: the result is
            ``act(eca(norm(x)) + identity)``, with the norm applied inside the rescale, so a block
            spends no launch and no pass over memory on it (inference only: the backward does
            not know it).

    Returns:
        ``(mean, gate)``, both ``(N, C)`` in the accumulation dtype (float32, float64 for float64);
        the gate ``None`` unless kept; with ``norm``, ``mean`` is ``x``'s.
    """
    plan = forward_plan(shape, x.device, x.dtype, weight.shape, relu, padding, gate, identity is not None, keep_gate)
    return plan(x, weight, identity, out, known_mean, norm)


class BackwardPlan(NamedTuple):
    """ECA's backward (or a block tail's) as two launches planned for one geometry and set of
    options (:func:`backward_plan`): the fused reduction ``sum_s(g * x)``, then the input gradient
    ``g * gate + dL/dmean / S`` with the gate's backward worked out inside it.

    Every tile of the input-gradient pass computes its channels' ``dL/dmean`` from the k
    neighbouring gate gradients, and the tiles at the first positions add the kernel's gradient
    of their channels to partial sums (one more operator adds those up). Without an input
    gradient to write, the kernel's gradient is worked out alone (:func:`weight_gradient`). As
    with :class:`ForwardPlan`, a caller that keeps the plan spends no host time on planning again.
    """

    reduction: _Reduction
    input_gradient: PlannedLaunch | BoundLaunch
    partial_shape: tuple[int, ...]
    """``(rows, *weight.shape)``: the rows of partial sums of the kernel's gradient."""
    padding: str
    gate_kind: str
    inplace: bool

    def __call__(
        self,
        grad: Tensor,
        saved: Tensor,
        relu_out: Tensor | None,
        mean: Tensor,
        gate: Tensor,
        weight: Tensor,
        identity: Tensor | None,
        masked: Tensor | None,
        dx: Tensor | None,
    ) -> Tensor:
        """Runs the backward (arguments as for :func:`eca_backward`); returns the kernel's gradient."""
        if relu_out is not None and masked is None:
            masked = torch.empty_like(grad)  # the input gradient reads the masked gradient
        sums = self.reduction(grad, saved, relu_out, masked, identity)
        if dx is None or dx.numel() == 0:
            return weight_gradient(sums, gate, mean, weight, self.padding, self.gate_kind, self.inplace)
        weight = weight.contiguous()
        partial = torch.empty(self.partial_shape, dtype=mean.dtype, device=mean.device)
        _affine(self.input_gradient, grad if relu_out is None else masked, gate, sums, None, dx, weight, partial, mean)
        return _summed_weight_gradient(partial, weight)

    def bound(self) -> BackwardPlan:
        """This plan for a caller whose tensors keep their dtypes and device
        (:class:`~ecanet.ops.triton_launch.BoundLaunch`)."""
        return self._replace(reduction=self.reduction.bound(), input_gradient=self.input_gradient.bound())


@functools.lru_cache(maxsize=4096)
def backward_plan(
    shape: Geometry,
    device: torch.device,
    weight_shape: tuple[int, ...],
    relu: bool,
    padding: str,
    gate_kind: str,
    inplace: bool,
    identity: bool,
) -> BackwardPlan:
    """The :class:`BackwardPlan` of calls on tensors of ``shape`` on ``device`` with an ECA kernel
    of ``weight_shape``; ``relu``, with an output to mask the gradient by; ``identity``, with a
    shortcut to subtract from the saved output (in place). Other arguments as for :func:`eca_backward`.
    """
    block_c = _affine_plan(shape)[0]
    rows = shape.n if weight_shape[0] > 1 else shape.n * -(-shape.c // block_c)
    return BackwardPlan(
        _reduction(shape, _split_policy(device), True, relu, identity, 1.0, None),
        _affine_launch(shape, weight_shape, padding, gate_kind, True, True, False, inplace, False, False),
        (rows, *weight_shape),
        padding,
        gate_kind,
        inplace,
    )


class TrainingPlans(NamedTuple):
    """The launches of a training call planned for one geometry and set of options
    (:func:`training_plans`): its forward (the gate kept for the backward) and its backward, as
    the output overwrote the input or not."""

    forward: ForwardPlan
    backward: BackwardPlan
    backward_in_place: BackwardPlan

    def bound(self) -> TrainingPlans:
        """These plans for a caller whose tensors keep their dtypes and device
        (:class:`~ecanet.ops.triton_launch.BoundLaunch`)."""
        return TrainingPlans(*(plan.bound() for plan in self))


def training_plans(
    shape: Geometry,
    device: torch.device,
    dtype: torch.dtype,
    weight_shape: tuple[int, ...],
    relu: bool,
    padding: str,
    gate: str,
    identity: bool,
) -> TrainingPlans:
    """The :class:`TrainingPlans` of calls on tensors of ``shape``, ``device`` and ``dtype`` with an
    ECA kernel of ``weight_shape``, with or without an ``identity`` (arguments as for :func:`eca_forward`).

    Example:
        >>> x = torch.empty(2, 8, 3, 3)
        >>> plans = training_plans(geometry(x, 1), x.device, x.dtype, (1, 1, 3), True, "zeros", "sigmoid", True)
        >>> plans.forward.keep_gate, plans.backward.inplace, plans.backward_in_place.inplace
        (True, False, True)
    """
    forward = forward_plan(shape, device, dtype, weight_shape, relu, padding, gate, identity, True)
    backward, backward_in_place = (
        backward_plan(shape, device, weight_shape, relu, padding, gate, inplace, identity and inplace)
        for inplace in (False, True)
    )
    return TrainingPlans(forward, backward, backward_in_place)


def eca_backward(
    shape: Geometry,
    grad: Tensor,
    saved: Tensor,
    relu_out: Tensor | None,
    mean: Tensor,
    gate: Tensor,
    weight: Tensor,
    padding: str,
    gate_kind: str,
    inplace: bool,
    identity: Tensor | None,
    masked: Tensor | None,
    dx: Tensor | None,
) -> Tensor:
    """ECA's backward in two launches (see :class:`BackwardPlan`).

    Args:
        shape: the :class:`Geometry` shared by every large tensor.
        grad, saved, relu_out, mean, gate, weight, padding, gate_kind, inplace, identity, masked,
            dx: as for :meth:`ecanet.ops.function.EcaKernels.backward`; in place, ``x * gate`` is
            recovered as ``saved - identity`` inside the reduction.

    Returns:
        The kernel's gradient, shaped and typed like ``weight``.
    """
    plan = backward_plan(
        shape, grad.device, weight.shape, relu_out is not None, padding, gate_kind, inplace, identity is not None
    )
    return plan(grad, saved, relu_out, mean, gate, weight, identity, masked, dx)


def _summed_weight_gradient(partial: Tensor, weight: Tensor) -> Tensor:
    """The kernel's gradient from rows of partial sums ``(rows, *weight.shape)``, typed like ``weight``
    (the rows carry the weight's shape so that the sum needs no view: each operator call is host time)."""
    return _dense(partial.sum(0), weight.dtype)


def weight_gradient(
    d_gate: Tensor, gate: Tensor, mean: Tensor, weight: Tensor, padding: str, gate_kind: str, inplace: bool
) -> Tensor:
    """The kernel's gradient from the gates' gradients on ``(N, C)`` in one launch (plus a sum over
    samples), for a backward that writes no input gradient.

    Args:
        d_gate: ``(N, C)`` gradient of the gate, or with ``inplace`` the gradient times the gate
            (see :meth:`ecanet.ops.function.EcaKernels.backward`).
        gate, mean: as the forward returned them.
        weight: ECA kernel ``[1 or C, 1, k]``.
        padding, gate_kind: the gate's options.
        inplace: ``d_gate`` is multiplied by the gate.

    Returns:
        The kernel's gradient, shaped and typed like ``weight``.
    """
    n, c = d_gate.shape
    k = weight.shape[-1]
    per_channel = weight.shape[0] > 1
    block_c = min(1024, _next_power_of_2(c))
    c_blocks = -(-c // block_c)
    partial = torch.empty((n if per_channel else n * c_blocks, *weight.shape), dtype=mean.dtype, device=mean.device)
    if n * c_blocks:
        _launcher("weight_gradient_kernel")(
            n * c_blocks,
            d_gate.contiguous(),
            gate.contiguous(),
            mean.contiguous(),
            partial,
            c,
            K=k,
            PER_CHANNEL=per_channel,
            CIRCULAR=padding == "circular",
            GATE=_GATES[gate_kind],
            INPLACE=inplace,
            BLOCK_C=block_c,
        )
    return _summed_weight_gradient(partial, weight)
