"""Layer benchmarks: ECA implementations alone and as a residual-block tail, on ResNet-50's stage shapes.

- ``layer``: the attention module on its own, ``out = attention(x)``: timm's ``EcaModule`` (the
  reference), the blog implementation, SE, ecanet's ``ECA`` out of place and ``ECA(inplace=True)``.
- ``call``: the layer on small activations against the bare minimum any ECA must do, pool +
  rescale as two ATen calls (``x.mean``, ``x.mul_``; in training ``x * x.mean`` and its
  backward), to show the fixed cost per call, which on a GPU is the host's time.
- ``tail``: what a residual block runs after its last BatchNorm, ``relu(attention(x) + shortcut)``:
  no attention (the reference, ``out += shortcut; relu_``, as plain blocks do), ecanet's fused
  ``ECA.residual``, timm's and SE's module followed by the same in-place addition and ReLU.

Every case also times a copy of the input (see :mod:`ecanet.bench.bandwidth`) to put a floor
under the numbers.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from ecanet.bench.bandwidth import copy_probe, traffic_floor_ms
from ecanet.bench.baselines import attention_candidates
from ecanet.bench.device import round_timing
from ecanet.bench.report import BenchRow, rows_from_stats
from ecanet.bench.timing import TimingStats, time_side_by_side
from ecanet.functional import eca_kernel_size

__all__ = [
    "CALL_ROUND_SECONDS",
    "CALL_SHAPES",
    "RESNET50_STAGE_SHAPES",
    "TENSOR_PASSES",
    "benchmark_call",
    "benchmark_layer",
    "benchmark_tail",
]

RESNET50_STAGE_SHAPES: tuple[tuple[int, int, int, int], ...] = (
    (32, 256, 56, 56),
    (32, 512, 28, 28),
    (32, 1024, 14, 14),
    (32, 2048, 7, 7),
)
"""Input of every ECA in ResNet-50's four stages at batch 32, 224 px."""

CALL_SHAPES: tuple[tuple[int, int, int, int], ...] = (
    (1, 256, 56, 56),
    (1, 512, 28, 28),
    (1, 1024, 14, 14),
    (1, 2048, 7, 7),
    (8, 1024, 14, 14),
    (8, 2048, 7, 7),
    (32, 2048, 7, 7),
)
"""Small activations (one image, or small spatial sizes) where a call's fixed costs show."""

CALL_ROUND_SECONDS = 0.1
"""Time each candidate of the ``call`` group runs per round on CPU. On the build machine the first 3-4
calls after another candidate ran take up to twice as long, whichever candidate it is (the data
comes back from farther away); 20 ms rounds of 1 ms calls were dominated by those, and the
differences between candidates by which one came before."""

TENSOR_PASSES = {
    ("call", "inference"): 3,  # in place: pool reads x; rescale reads and writes x
    ("call", "training"): 7,  # as the layer
    ("layer", "inference"): 3,  # pool reads x; rescale reads x, writes out
    ("layer", "training"): 7,  # + gate gradient reads grad, x; input gradient reads grad, writes dx
    ("tail", "inference"): 4,  # pool reads x; reads x, shortcut, writes out
    ("tail", "training"): 10,  # + reads grad, out, x, writes the shortcut's gradient; reads it, writes dx
}
"""Full-tensor reads and writes each group cannot avoid: the memory-traffic floor in passes."""

_MEMORY_FORMATS = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def _inputs(shape: tuple[int, ...], memory_format: str, dtype: str, seed: int, device: torch.device) -> Tensor:
    # Positive values (1 +- 0.5) with the candidates' all-8 kernels keep every gate within 1e-6 of
    # 1, so layers that overwrite their input neither decay to denormals nor blow up.
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=generator) + 0.5
    return x.to(device=device, dtype=_DTYPES[dtype], memory_format=_MEMORY_FORMATS[memory_format])


def _training_step(forward: Callable[[], Tensor], leaves: list[Tensor], grad: Tensor) -> Callable[[], object]:
    """A training step that frees the gradients it made before it returns.

    The candidates share their input leaves, so a step that cleared the gradients at its start
    would free the ones the previous candidate made, and pay for that candidate's allocator: on
    the Zen 5 EPYC, freeing timm's 25.7 MB input gradient made glibc return 51-77 MB of heap to
    the system (a 4-8 ms ``brk``) inside ecanet's bfloat16 32x512x28x28 step, which took 8-14 ms
    in those rounds against 3.9 ms in the rest.
    """

    def step() -> None:
        forward().backward(grad)
        for leaf in leaves:
            leaf.grad = None

    return step


def _rows(
    group: str,
    shape: tuple[int, ...],
    memory_format: str,
    dtype: str,
    mode: str,
    reference: str,
    stats: dict[str, TimingStats],
) -> list[BenchRow]:
    copy_ms = stats.pop("copy").median_s * 1e3
    floor_ms = traffic_floor_ms(copy_ms, TENSOR_PASSES[(group, mode)])
    case = "x".join(str(size) for size in shape)
    return rows_from_stats(group, case, memory_format, dtype, mode, stats, reference, floor_ms)


def _modules(channels: int, dtype: str, device: torch.device) -> dict[str, nn.Module]:
    layers = attention_candidates(channels, eca_kernel_size(channels))
    return {name: layer.to(device=device, dtype=_DTYPES[dtype]) for name, layer in layers.items()}


def benchmark_layer(
    shape: tuple[int, int, int, int],
    memory_format: str,
    dtype: str,
    mode: str,
    *,
    rounds: int,
    warmup: int,
    device: str | torch.device = "cpu",
) -> list[BenchRow]:
    """Times the attention layers alone on one input; the reference is timm (else the blog version).

    Args:
        shape: ``(N, C, H, W)``.
        memory_format: ``"nchw"`` or ``"channels_last"``.
        dtype: ``"float32"`` or ``"bfloat16"``.
        mode: ``"inference"`` (under ``torch.no_grad``) or ``"training"`` (forward and backward).
        rounds, warmup: as for :func:`ecanet.bench.timing.time_side_by_side`.
        device: where the layers and tensors live (see :func:`ecanet.bench.device.round_timing`).

    Returns:
        One :class:`ecanet.bench.report.BenchRow` per candidate (``ecanet-inplace`` at inference only).

    Example:
        >>> rows = benchmark_layer((2, 16, 4, 4), "nchw", "float32", "inference", rounds=1, warmup=0)
        >>> "ecanet-inplace" in [r.candidate for r in rows]
        True
    """
    device = torch.device(device)
    timing = {"rounds": rounds, "warmup": warmup, **round_timing(device)}
    layers = _modules(shape[1], dtype, device)
    reference = "timm" if "timm" in layers else "blog"
    x = _inputs(shape, memory_format, dtype, seed=0, device=device)
    candidates: dict[str, Callable[[], object]] = {"copy": copy_probe(x)}
    if mode == "inference":
        # The in-place layer rescales x itself: its gate is 1 to within 1e-6 on these inputs (see
        # attention_candidates), so x stays put and every candidate reads the same, equally warm
        # memory (a buffer of its own would be colder in the caches than the x the others share).
        for name, layer in layers.items():
            candidates[name] = lambda layer=layer: layer(x)
        with torch.no_grad():
            stats = time_side_by_side(candidates, **timing)
    else:
        x.requires_grad_(True)
        grad = _inputs(shape, memory_format, dtype, seed=1, device=device)
        for name, layer in layers.items():
            if name != "ecanet-inplace":  # a leaf cannot be overwritten under autograd
                leaves = [x, *layer.parameters()]
                candidates[name] = _training_step(lambda layer=layer: layer(x), leaves, grad)
        stats = time_side_by_side(candidates, **timing)
    return _rows("layer", shape, memory_format, dtype, mode, reference, stats)


def benchmark_tail(
    shape: tuple[int, int, int, int],
    memory_format: str,
    dtype: str,
    mode: str,
    *,
    rounds: int,
    warmup: int,
    device: str | torch.device = "cpu",
) -> list[BenchRow]:
    """Times residual-block tails ``relu(attention(x) + shortcut)`` on one input; the reference has no attention.

    At inference every tail writes into a buffer of its own as blocks do (the branch output is a
    temporary); in training every tail is out of place (``x`` and the shortcut are leaves).
    Arguments and result as for :func:`benchmark_layer`.

    Example:
        >>> rows = benchmark_tail((2, 16, 4, 4), "nchw", "float32", "training", rounds=1, warmup=0)
        >>> rows[0].candidate, rows[0].reference
        ('none', 'none')
    """
    device = torch.device(device)
    timing = {"rounds": rounds, "warmup": warmup, **round_timing(device)}
    layers = _modules(shape[1], dtype, device)
    attentions = {name: layers[name] for name in ("timm", "se") if name in layers}
    eca = layers["ecanet"]
    x = _inputs(shape, memory_format, dtype, seed=0, device=device)
    shortcut = _inputs(shape, memory_format, dtype, seed=2, device=device)
    candidates: dict[str, Callable[[], object]] = {"copy": copy_probe(x)}
    if mode == "inference":
        none_buffer, eca_buffer = x.clone(), x.clone()
        candidates["none"] = lambda: none_buffer.add_(shortcut).relu_()
        candidates["ecanet"] = lambda: eca.residual(eca_buffer, shortcut)
        for name, layer in attentions.items():
            candidates[name] = lambda layer=layer: layer(x).add_(shortcut).relu_()
        with torch.no_grad():
            stats = time_side_by_side(candidates, **timing)
    else:
        x.requires_grad_(True)
        shortcut.requires_grad_(True)
        grad = _inputs(shape, memory_format, dtype, seed=1, device=device)
        candidates["none"] = _training_step(lambda: torch.relu(x + shortcut), [x, shortcut], grad)
        leaves = [x, shortcut, *eca.parameters()]
        candidates["ecanet"] = _training_step(lambda: eca.residual(x, shortcut), leaves, grad)
        for name, layer in attentions.items():
            leaves = [x, shortcut, *layer.parameters()]
            candidates[name] = _training_step(lambda layer=layer: torch.relu(layer(x) + shortcut), leaves, grad)
        stats = time_side_by_side(candidates, **timing)
    return _rows("tail", shape, memory_format, dtype, mode, "none", stats)


def benchmark_call(
    shape: tuple[int, int, int, int],
    memory_format: str,
    dtype: str,
    mode: str = "inference",
    *,
    rounds: int,
    warmup: int,
    device: str | torch.device = "cpu",
) -> list[BenchRow]:
    """Times ECA against pool + rescale on a small input: the cost of the gate and of the call itself.

    The reference is what any ECA must do minus the gate. At inference, ``x.mean`` and ``x.mul_``
    against ``ECA(inplace=True)``, ecanet's out-of-place layer and timm's; in training, a step of
    ``x * x.mean`` (forward and backward) against ecanet's layer and timm's. Each round repeats a
    candidate for :data:`CALL_ROUND_SECONDS` and takes the mean (steady state: a call timed alone
    mostly measures caches the other candidates evicted). Arguments and result as for
    :func:`benchmark_layer`.

    Example:
        >>> rows = benchmark_call((1, 16, 4, 4), "nchw", "float32", rounds=1, warmup=0)
        >>> rows[0].candidate, rows[0].reference
        ('pool+rescale', 'pool+rescale')
    """
    device = torch.device(device)
    layers = _modules(shape[1], dtype, device)
    x = _inputs(shape, memory_format, dtype, seed=0, device=device)
    timing = {"rounds": rounds, "warmup": warmup, **round_timing(device, CALL_ROUND_SECONDS)}
    if mode == "training":
        return _rows("call", shape, memory_format, dtype, mode, "pool+rescale", _time_call_training(x, layers, timing))

    def pool_and_rescale() -> None:
        # Rescaling by 1 (the candidates' gates are 1 to within 1e-6, see attention_candidates)
        # keeps x the same round after round; fill_ on the (N, C) mean costs about a microsecond.
        x.mul_(x.mean((2, 3), keepdim=True).fill_(1.0))

    # Every candidate works on x itself (the in-place ones too), so all read equally warm memory.
    candidates: dict[str, Callable[[], object]] = {
        "pool+rescale": pool_and_rescale,
        "copy": copy_probe(x),
        "ecanet-inplace": lambda: layers["ecanet-inplace"](x),
        "ecanet": lambda: layers["ecanet"](x),
    }
    if "timm" in layers:
        candidates["timm"] = lambda: layers["timm"](x)
    with torch.no_grad():
        stats = time_side_by_side(candidates, **timing)
    return _rows("call", shape, memory_format, dtype, mode, "pool+rescale", stats)


def _time_call_training(x: Tensor, layers: dict[str, nn.Module], timing: dict) -> dict[str, TimingStats]:
    """Training steps of the ``call`` group: bare pool + rescale, ecanet's layer, timm's."""
    x.requires_grad_(True)
    grad = torch.ones_like(x)
    candidates: dict[str, Callable[[], object]] = {
        "pool+rescale": _training_step(lambda: x * x.mean((2, 3), keepdim=True), [x], grad),
        "copy": copy_probe(x.detach()),
    }
    for name in ("ecanet", "timm"):
        if name in layers:
            layer = layers[name]
            candidates[name] = _training_step(lambda layer=layer: layer(x), [x, *layer.parameters()], grad)
    return time_side_by_side(candidates, **timing)
