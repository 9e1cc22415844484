"""Where a benchmark runs: CPU or a CUDA device, and how rounds are timed there."""

from __future__ import annotations

import functools
from typing import Any

import torch

__all__ = [
    "GPU_ROUND_SECONDS",
    "NETWORK_GPU_ROUND_SECONDS",
    "bench_device",
    "convolves_bfloat16_natively",
    "round_timing",
]

GPU_ROUND_SECONDS = 0.02
"""Least time each candidate runs per round on a GPU: kernels take microseconds, and the
synchronisation that ends a round costs some ten, so a round repeats a call many times (queued
back to back, as a network's layers are)."""

NETWORK_GPU_ROUND_SECONDS = 0.25
"""Least time per round for whole networks on a GPU: some dozens of forwards (or several training
steps) back to back, so a round measures the steady state, where the host either keeps ahead of
the GPU or does not, rather than the start of a queue. With a round of 0.02 s (3 or 4 forwards of
ResNet-50 at batch 64), an H100 machine's eager rows scattered by up to a factor of two between rounds."""


def bench_device(name: str) -> torch.device:
    """The device called ``name`` (``"cpu"``, ``"cuda"``, ``"cuda:N"``), checked to be usable.

    Example:
        >>> bench_device("cpu")
        device(type='cpu')
        >>> bench_device("tpu")
        Traceback (most recent call last):
          ...
        ValueError: benchmark device must be 'cpu', 'cuda' or 'cuda:N', got 'tpu'
    """
    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise ValueError(f"benchmark device must be 'cpu', 'cuda' or 'cuda:N', got {name!r}")
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (device.index or 0) >= count:
            raise ValueError(f"benchmark device {name!r} asked for, but this machine has {count} usable CUDA devices")
    return device


def round_timing(
    device: torch.device, cpu_round_seconds: float = 0.0, gpu_round_seconds: float = GPU_ROUND_SECONDS
) -> dict[str, Any]:
    """Keyword arguments for :func:`ecanet.bench.timing.time_side_by_side` on ``device``.

    On CPU, rounds last at least ``cpu_round_seconds``. On CUDA they synchronise with the device
    before the clock starts and before it stops, and last at least ``gpu_round_seconds``.

    Example:
        >>> round_timing(torch.device("cpu"), 0.1)
        {'min_round_seconds': 0.1}
    """
    if device.type == "cuda":
        return {
            "min_round_seconds": gpu_round_seconds,
            "synchronize": functools.partial(torch.cuda.synchronize, device),
        }
    return {"min_round_seconds": cpu_round_seconds}


def convolves_bfloat16_natively(device: torch.device) -> bool:
    """Whether bfloat16 convolutions run on ``device``'s own instructions: on a GPU, yes; on a CPU,
    where oneDNN has its bfloat16 kernels (AVX-512 and newer). Elsewhere it emulates them: on a
    2-core AMD EPYC with AVX2, one forward of ResNet-50 at batch 8 and 224 px took 38 s in bfloat16
    against 1.4 s in float32, so a benchmark of bfloat16 networks there measures the emulation.

    Example:
        >>> convolves_bfloat16_natively(torch.device("cuda"))
        True
    """
    return device.type == "cuda" or bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
