"""The whole ``ecanet bench`` run: which cases, in which order, and the files it leaves behind."""

from __future__ import annotations

import importlib.util
import json
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch

from ecanet.bench.allocator import pin_glibc_thresholds
from ecanet.bench.device import convolves_bfloat16_natively
from ecanet.bench.host import benchmark_host_block
from ecanet.bench.layers import CALL_SHAPES, RESNET50_STAGE_SHAPES, benchmark_call, benchmark_layer, benchmark_tail
from ecanet.bench.machine import machine_description
from ecanet.bench.models import PROJECTED_GATE, TRAINING_NODE, benchmark_model_inference, benchmark_model_training
from ecanet.bench.report import BenchRow, format_table, plot_rows, write_csv
from ecanet.dependencies import require
from ecanet.training.files import write_atomically

__all__ = ["DEFAULT_GROUPS", "GROUPS", "bench_cases", "run_bench", "select_cases"]

GROUPS = ("layer", "tail", "call", "model", "host")

DEFAULT_GROUPS = ("layer", "tail", "call", "model")
"""What runs unless groups are named: ``"host"`` (a GPU's host time, simulated on CPU tensors,
:mod:`ecanet.bench.host`) runs on request, into results of its own."""

Case = tuple[str, Callable[[], list[BenchRow]]]


MODEL_SETUPS: dict[str, dict[str, dict[str, Any]]] = {
    "cpu": {"inference": {"batch": 8}, "training": {"names": ("resnet18", "eca_resnet18")}},
    "cuda": {
        "inference": {"batch": 64},
        "training": {
            "names": ("resnet50", "eca_resnet50"),
            "batch": 64,
            "image_size": 224,
            "num_classes": 1000,
            "small_input": False,
        },
    },
}
"""Network cases per device type: on CPU ResNet-50 inference at batch 8 and small-input ResNet-18
training (batch 64, 32 px); on a GPU, where those are too small to keep it busy, ResNet-50 at
224 px and batch 64 for both (see :func:`ecanet.bench.models.benchmark_model_inference` and
:func:`ecanet.bench.models.benchmark_model_training` for the other defaults)."""

NETWORK_ROUNDS: dict[str, int] = {"cpu": 31, "cuda": 15}
"""Measured rounds of a full run's network cases per device type. On a busy CPU a training step's
ratio to the plain network's moves by about 5% from round to round, so 15 rounds leave the paired
overhead's 95% interval some 10 points wide, wider than the goals (<= 2% and <= 5%); 31 rounds
narrow it by about 30% (from the 10th smallest to the 10th largest ratio, 97.1% coverage)."""


def bench_cases(
    groups: Sequence[str] = DEFAULT_GROUPS,
    *,
    quick: bool = False,
    rounds: int | None = None,
    device: str | torch.device = "cpu",
) -> list[Case]:
    """The benchmark cases as ``(label, run)`` pairs, in the order they run.

    Full run: every ResNet-50 stage shape at batch 32, NCHW and channels-last, float32 and
    bfloat16, inference and training, for the layer and the block tail; the in-place layer on
    small activations against bare pool + rescale (float32, both formats); ECA-ResNet-50 against
    ResNet-50 at inference (batch 8, 224 px; eager in both formats and dtypes, compiled in NCHW
    float32) and ECA-ResNet-18 against ResNet-18 training steps (batch 64, 32 px; bfloat16 under
    autocast), with glibc's allocation thresholds pinned (:mod:`ecanet.bench.allocator`); the
    bfloat16 networks only where the CPU convolves bfloat16 natively
    (:func:`ecanet.bench.device.convolves_bfloat16_natively`). On a GPU
    the networks are ResNet-50s at batch 64 and 224 px (:data:`MODEL_SETUPS`), every network
    case is also replayed from CUDA graphs (the GPU's work without the host's), and training is
    also compiled (NCHW float32, channels-last bfloat16; the latter in ``"reduce-overhead"`` mode
    too, compiled and replayed from CUDA graphs, as ``ecanet train --compile`` can). Networks
    get :data:`NETWORK_ROUNDS` rounds unless ``rounds`` is given. ``quick`` keeps the first and last stage
    shapes, float32 only, eager models only, and 5 rounds. ``"host"`` (CPU only) times a ResNet-50
    bottleneck's inference and training step on the GPU's route, up to Triton's launcher, which
    launches nothing (:mod:`ecanet.bench.host`).

    Args:
        groups: any of ``"layer"``, ``"tail"``, ``"call"``, ``"model"``, ``"host"``.
        quick: the short run.
        rounds: measured rounds per case (default 15, networks :data:`NETWORK_ROUNDS`; quick 5).

    Example:
        >>> [label for label, _ in bench_cases(["model"], quick=True)][:2]
        ['model resnet50 inference nchw float32', 'model resnet50 inference channels_last float32']
    """
    unknown = sorted(set(groups) - set(GROUPS))
    if unknown:
        raise ValueError(f"unknown benchmark groups {unknown}; valid: {list(GROUPS)}")
    device = torch.device(device)
    network_rounds = rounds if rounds is not None else (5 if quick else NETWORK_ROUNDS[device.type])
    rounds = rounds if rounds is not None else (5 if quick else 15)
    warmup = 1 if quick else 2
    if "host" in groups and device.type != "cpu":
        raise ValueError("the host group simulates a GPU's host on CPU tensors; on a GPU the model group measures it")
    if "host" in groups and importlib.util.find_spec("triton") is None:
        raise ValueError("the host group plans ECA's Triton launches: it needs Triton installed")
    timing = {"rounds": rounds, "warmup": warmup, "device": device}
    shapes = (RESNET50_STAGE_SHAPES[0], RESNET50_STAGE_SHAPES[-1]) if quick else RESNET50_STAGE_SHAPES
    dtypes = ("float32",) if quick else ("float32", "bfloat16")
    formats = ("nchw", "channels_last")
    cases: list[Case] = []
    for group, function in (("layer", benchmark_layer), ("tail", benchmark_tail)):
        if group not in groups:
            continue
        for shape in shapes:
            for dtype in dtypes:
                for memory_format in formats:
                    for mode in ("inference", "training"):
                        label = f"{group} {'x'.join(map(str, shape))} {mode} {memory_format} {dtype}"
                        cases.append((label, partial(function, shape, memory_format, dtype, mode, **timing)))
    if "call" in groups:
        call_shapes = (CALL_SHAPES[0], CALL_SHAPES[-1]) if quick else CALL_SHAPES
        for shape in call_shapes:
            for memory_format in formats:
                for mode in ("inference", "training"):
                    label = f"call {'x'.join(map(str, shape))} {mode} {memory_format} float32"
                    cases.append((label, partial(benchmark_call, shape, memory_format, "float32", mode, **timing)))
    if "model" in groups:
        setups = MODEL_SETUPS[device.type]
        network_timing = {**timing, "rounds": network_rounds}
        # On a GPU every eager case runs again replayed from CUDA graphs: the GPU's work alone.
        graphed_too = (False, True) if device.type == "cuda" else (False,)
        # Emulated bfloat16 convolutions take minutes per case and say nothing about ECA.
        model_dtypes = dtypes if convolves_bfloat16_natively(device) else ("float32",)
        model_cases: list[Case] = []
        for kind, function in (("inference", benchmark_model_inference), ("training", benchmark_model_training)):
            setup = setups[kind]
            network = setup.get("names", ("resnet50",))[0]
            for graphed in graphed_too:
                mode = f"{kind}-graphed" if graphed else kind
                for dtype in model_dtypes:
                    for memory_format in formats:
                        label = f"model {network} {mode} {memory_format} {dtype}"
                        options = {**setup, "memory_format": memory_format, "dtype": dtype, **network_timing}
                        if kind == "training" and device.type == "cuda" and not graphed:
                            # and ECA's training calls through the C++ node, for the host-bound steps
                            options["names"] = (*setup["names"], setup["names"][1] + TRAINING_NODE)
                        model_cases.append((label, partial(function, graphed=graphed, **options)))
            if kind == "inference" and not quick:
                label = "model resnet50 inference-compiled nchw float32"
                options = {**setup, "compiled": True, **network_timing}
                if device.type == "cuda":  # and ECA through its compiled-inference operators
                    options["names"] = ("resnet50", "eca_resnet50", f"eca_resnet50{PROJECTED_GATE}")
                model_cases.append((label, partial(benchmark_model_inference, **options)))
            if kind == "training" and not quick and device.type == "cuda":
                # Where the eager step is host-bound, inductor's fused plain operators are the other remedy.
                for memory_format, dtype in (("nchw", "float32"), ("channels_last", "bfloat16")):
                    label = f"model {network} training-compiled {memory_format} {dtype}"
                    options = {
                        **setup,
                        "memory_format": memory_format,
                        "dtype": dtype,
                        "compiled": True,
                        **network_timing,
                    }
                    model_cases.append((label, partial(benchmark_model_training, **options)))
                # ecanet train's remedy for a host-bound step: compiled and replayed from CUDA graphs.
                label = f"model {network} training-compiled-reduce-overhead channels_last bfloat16"
                options = {**setup, "memory_format": "channels_last", "dtype": "bfloat16", **network_timing}
                options.update(compiled=True, compile_mode="reduce-overhead")
                model_cases.append((label, partial(benchmark_model_training, **options)))
        if device.type == "cpu":
            model_cases = [(label, partial(_run_with_pinned_allocator, run)) for label, run in model_cases]
        cases += model_cases
    if "host" in groups:
        for mode in ("inference", "training"):
            label = f"host bottleneck {mode} channels_last float32"
            cases.append((label, partial(benchmark_host_block, mode, rounds=rounds, warmup=warmup)))
    return cases


def select_cases(cases: Sequence[Case], patterns: Sequence[str]) -> list[Case]:
    """The cases whose label contains any of ``patterns`` (all of them without patterns).

    Raises:
        ValueError: no label matches, naming the patterns and a few of the labels.

    Example:
        >>> cases = bench_cases(["model"], quick=True)
        >>> [label for label, _ in select_cases(cases, ["training channels_last"])]
        ['model resnet18 training channels_last float32']
    """
    if not patterns:
        return list(cases)
    chosen = [case for case in cases if any(pattern in case[0] for pattern in patterns)]
    if not chosen:
        labels = [label for label, _ in cases]
        raise ValueError(f"no benchmark case matches {list(patterns)}; cases look like {labels[:3]}")
    return chosen


def _run_with_pinned_allocator(run: Callable[[], list[BenchRow]]) -> list[BenchRow]:
    """``run()`` after :func:`ecanet.bench.allocator.pin_glibc_thresholds` (networks run last, so the
    layer cases keep glibc's default behaviour, page faults of fresh outputs included)."""
    pin_glibc_thresholds()
    return run()


def run_bench(
    out_dir: str | Path,
    cases: Sequence[Case],
    *,
    command: str = "",
    progress: bool = True,
    device: str | torch.device = "cpu",
) -> list[BenchRow]:
    """Runs ``cases`` (see :func:`bench_cases`) and writes ``results.csv``, ``results.png``,
    ``results.txt`` (the table) and ``environment.json`` (machine, versions, command, duration).
    The table and the CSV are rewritten after every case, so a stopped run keeps what it measured.

    Args:
        out_dir: directory for the files (created).
        cases: ``(label, run)`` pairs; each ``run()`` returns rows.
        command: the command line, recorded in ``environment.json``.
        progress: show a tqdm bar over the cases.
        device: the device the cases run on, described in ``environment.json``.

    Returns:
        All rows, in case order.

    Raises:
        MissingDependency: tqdm or matplotlib (the ``train`` extra) is missing or too old; raised
            before any case runs.

    Example:
        >>> import tempfile
        >>> from ecanet.bench.layers import benchmark_layer
        >>> case = ("tiny", lambda: benchmark_layer((2, 8, 4, 4), "nchw", "float32", "inference", rounds=1, warmup=0))
        >>> out = tempfile.mkdtemp()
        >>> rows = run_bench(out, [case], progress=False)
        >>> sorted(p.name for p in Path(out).iterdir())
        ['environment.json', 'results.csv', 'results.png', 'results.txt']
    """
    require("benchmarking", "tqdm", "matplotlib")
    from tqdm import tqdm

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[BenchRow] = []
    started = time.time()
    bar = tqdm(cases, desc="bench", unit="case", disable=not progress)
    for label, run in bar:
        bar.set_postfix_str(label)
        rows.extend(run())
        write_csv(rows, out / "results.csv")
        write_atomically(out / "results.txt", (format_table(rows) + "\n").encode())
    environment = machine_description(device)
    environment.update(command=command, cases=[label for label, _ in cases], seconds=round(time.time() - started, 1))
    environment["started_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started))
    plot_rows(rows, out / "results.png")
    write_atomically(out / "environment.json", (json.dumps(environment, indent=2) + "\n").encode())
    return rows
