"""Model benchmarks: what ECA costs a whole network, against the same network without attention.

Both networks come from ecanet's registry, so they share every line of code except the attention
(ecanet's blocks call the fused tail ``ECA.residual``); the overhead column is then ECA's cost.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from functools import partial

import torch
import torch.nn.functional as F

from ecanet.bench.device import NETWORK_GPU_ROUND_SECONDS, round_timing
from ecanet.bench.report import BenchRow, rows_from_stats
from ecanet.bench.timing import time_side_by_side
from ecanet.models import create_model
from ecanet.models.resnet import use_projected_gate
from ecanet.ops import triton_training

__all__ = ["PROJECTED_GATE", "TRAINING_NODE", "benchmark_model_inference", "benchmark_model_training"]

_MEMORY_FORMATS = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}


def benchmark_model_inference(
    names: Sequence[str] = ("resnet50", "eca_resnet50"),
    *,
    batch: int = 8,
    image_size: int = 224,
    memory_format: str = "nchw",
    dtype: str = "float32",
    compiled: bool = False,
    graphed: bool = False,
    rounds: int = 15,
    warmup: int = 2,
    device: str | torch.device = "cpu",
) -> list[BenchRow]:
    """Times ``model(x)`` under ``torch.inference_mode`` for each model; the first name is the reference.

    ``graphed`` times replays of each eager forward captured in a CUDA graph: the GPU's work alone,
    without the host time that issues it (on a GPU that host time is most of what ECA costs).

    Args:
        names: registry names; the first is the reference (no attention). With ``compiled``, a name
            may end in :data:`PROJECTED_GATE`.
        batch, image_size: input ``(batch, 3, image_size, image_size)``.
        memory_format: ``"nchw"`` or ``"channels_last"`` (model and input).
        dtype: ``"float32"`` or ``"bfloat16"`` (model and input converted).
        compiled: wrap each model in ``torch.compile`` (compilation happens in the warm-up rounds).
        graphed: replay each eager forward from a CUDA graph (CUDA devices only; not with ``compiled``).
        rounds, warmup: as for :func:`ecanet.bench.timing.time_side_by_side` (``warmup >= 1`` when compiled).
        device: where the models and inputs live (see :func:`ecanet.bench.device.round_timing`).

    Example:
        >>> rows = benchmark_model_inference(("resnet18", "eca_resnet18"), batch=1, image_size=32, rounds=1, warmup=0)
        >>> [r.candidate for r in rows], rows[1].reference
        (['resnet18', 'eca_resnet18'], 'resnet18')
    """
    device = torch.device(device)
    if graphed and (compiled or device.type != "cuda"):
        raise ValueError(
            f"graphed inference replays eager CUDA graphs: it needs a CUDA device and no compile, got {device}"
        )
    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
    layout = _MEMORY_FORMATS[memory_format]
    x = torch.randn(batch, 3, image_size, image_size, generator=torch.Generator().manual_seed(0))
    x = x.to(device=device, dtype=torch_dtype, memory_format=layout)
    candidates: dict[str, Callable[[], object]] = {}
    with torch.inference_mode():
        models = {name: _seeded_model(name).eval().to(torch_dtype) for name in names}
        for name, model in models.items():
            model = model.to(device=device, memory_format=layout)
            runner = torch.compile(model) if compiled else model
            forward = partial(runner, x)
            candidates[name] = _replayed_from_cuda_graph(forward) if graphed else forward
        stats = time_side_by_side(
            candidates,
            rounds=rounds,
            warmup=warmup,
            **round_timing(device, gpu_round_seconds=NETWORK_GPU_ROUND_SECONDS),
        )
    mode = "inference-compiled" if compiled else "inference-graphed" if graphed else "inference"
    return rows_from_stats("model", f"{names[1]} b{batch} {image_size}px", memory_format, dtype, mode, stats, names[0])


TRAINING_NODE = "+training-node"
"""Suffix of a candidate name: the registry's network, its prepared CUDA training calls through the
C++ node that launches the kernels itself (:func:`ecanet.ops.triton_training.node_in_use`), e.g.
``"eca_resnet50+training-node"``."""

PROJECTED_GATE = "+projected-gate"
"""Suffix of a candidate name: the registry's network with ECA's compiled-inference operators
switched on (:func:`ecanet.models.resnet.use_projected_gate`), e.g. ``"eca_resnet50+projected-gate"``."""


def _seeded_model(name: str, **options: object) -> torch.nn.Module:
    """``create_model(name, **options)`` initialised from seed 0, so that every candidate starts
    from the same random state (``name`` may end in :data:`PROJECTED_GATE`). Callers build every
    candidate before capturing any CUDA graph: with the second network seeded and built after the
    first one's capture, the replays crashed the process (torch 2.11 on an H200; not seen with the
    networks built first)."""
    torch.manual_seed(0)
    base = name.removesuffix(PROJECTED_GATE)
    model = create_model(base, **options)
    if base != name and not use_projected_gate(model):
        raise ValueError(f"{base} has no ECA bottleneck to run through the projected gate")
    return model


def _replayed_from_cuda_graph(run: Callable[[], object], warmup: int = 3) -> Callable[[], None]:
    """``run`` captured in a CUDA graph after ``warmup`` calls on a side stream (kernels compiled,
    ECA's calls prepared, cuDNN's algorithms chosen); returns the graph's replay."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(warmup):
            run()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        run()
    return graph.replay


def benchmark_model_training(
    names: Sequence[str] = ("resnet18", "eca_resnet18"),
    *,
    batch: int = 64,
    image_size: int = 32,
    num_classes: int = 10,
    small_input: bool = True,
    memory_format: str = "nchw",
    dtype: str = "float32",
    compiled: bool = False,
    compile_mode: str = "default",
    graphed: bool = False,
    rounds: int = 15,
    warmup: int = 2,
    device: str | torch.device = "cpu",
) -> list[BenchRow]:
    """Times one SGD training step (forward, loss, backward, update) of each model.

    By default the models use the small-input stem (3x3 stride 1, no max-pool) for CIFAR-sized
    images (``small_input=False``: ImageNet's stem). ``dtype="bfloat16"`` runs the step under
    autocast on the device. ``compiled`` wraps each network in ``torch.compile`` (forward and
    backward compiled in the warm-up rounds; the loss and the update stay eager) in
    ``compile_mode`` (``"reduce-overhead"`` also replays them from CUDA graphs, as ``ecanet train
    --compile reduce-overhead`` does; the rows' mode names it). ``graphed``
    replays each network's forward and backward from CUDA graphs
    (``torch.cuda.make_graphed_callables``; the loss and the update stay eager), CUDA devices
    only, not with ``compiled``. A name ending in :data:`TRAINING_NODE` times the network's steps
    with ECA's prepared CUDA training calls through the C++ node. Arguments otherwise as for
    :func:`benchmark_model_inference`.

    Example:
        >>> rows = benchmark_model_training(batch=2, image_size=8, rounds=1, warmup=0)
        >>> rows[1].candidate, rows[1].mode
        ('eca_resnet18', 'training')
    """
    device = torch.device(device)
    if graphed and (compiled or device.type != "cuda"):
        raise ValueError(
            f"graphed training replays eager CUDA graphs: it needs a CUDA device and no compile, got {device}"
        )
    layout = _MEMORY_FORMATS[memory_format]
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, image_size, image_size, generator=generator).to(device=device, memory_format=layout)
    target = torch.randint(0, num_classes, (batch,), generator=generator).to(device)

    def autocast() -> contextlib.AbstractContextManager:
        if dtype != "bfloat16":
            return contextlib.nullcontext()
        # Autocast's cache of cast weights must stay off around CUDA graphs.
        return torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=not graphed)

    candidates: dict[str, Callable[[], object]] = {}
    models = {
        name: _seeded_model(name.removesuffix(TRAINING_NODE), num_classes=num_classes, small_input=small_input)
        for name in names
    }
    for name, model in models.items():
        model = model.train().to(device=device, memory_format=layout)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        if graphed:
            with autocast():
                model = torch.cuda.make_graphed_callables(model, (x,))
        elif compiled:
            model = torch.compile(model, mode=compile_mode)

        def step(model=model, optimizer=optimizer) -> None:
            optimizer.zero_grad(set_to_none=True)
            with autocast():
                loss = F.cross_entropy(model(x), target)
            loss.backward()
            optimizer.step()

        candidates[name] = triton_training.node_in_use()(step) if name.endswith(TRAINING_NODE) else step
    stats = time_side_by_side(
        candidates, rounds=rounds, warmup=warmup, **round_timing(device, gpu_round_seconds=NETWORK_GPU_ROUND_SECONDS)
    )
    mode = "training-graphed" if graphed else "training"
    if compiled:
        mode = "training-compiled" if compile_mode == "default" else f"training-compiled-{compile_mode}"
    return rows_from_stats("model", f"{names[1]} b{batch} {image_size}px", memory_format, dtype, mode, stats, names[0])
