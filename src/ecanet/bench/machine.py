"""The machine a benchmark ran on: its description for the record, and the folder its results go to.

``python -m ecanet.bench.machine [DEVICE]`` prints the folder name for DEVICE (default ``cpu``;
``make bench`` writes there), so each machine's committed results sit in a folder of their own and
a run on one machine never overwrites another's.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import re
import sys
from pathlib import Path

import torch

from ecanet.bench.device import bench_device, convolves_bfloat16_natively
from ecanet.ops import triton_training

__all__ = ["machine_description", "machine_folder"]

CPU_FAMILIES = ("epyc", "ryzen", "threadripper", "opteron", "xeon", "core", "atom", "neoverse", "graviton", "ampere")
"""Words of a CPU's model name that name its family (the first one found names the folder)."""

_GPU_VENDOR_WORDS = {"nvidia", "geforce", "tesla", "quadro", "amd", "radeon", "instinct"}
_GPU_PACKAGING = re.compile(r"^(\d+gb|hbm\w*|pcie|sxm\w*|nvl\w*|mig)$")


def machine_description(device: str | torch.device = "cpu") -> dict[str, object]:
    """CPU model, core and thread counts, library versions and, for a CUDA ``device``, the GPU,
    for the record next to the numbers.

    Example:
        >>> {"cpu", "torch", "torch_threads", "device"} <= set(machine_description())
        True
    """
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    description: dict[str, object] = {
        "device": str(device),
        "cpu": cpu,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "logical_cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda_available": torch.cuda.is_available(),
        "autograd_multithreading": torch._C._is_multithreading_enabled(),
        "bfloat16_convolutions_native": convolves_bfloat16_natively(torch.device(device)),
    }
    device = torch.device(device)
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        description.update(
            gpu=properties.name,
            gpu_memory_gib=round(properties.total_memory / 2**30, 1),
            gpu_multiprocessors=properties.multi_processor_count,
            cuda=torch.version.cuda,
            triton=_version_of("triton"),
            cuda_training_node=triton_training.in_use,
        )
    return description


def machine_folder(description: dict[str, object]) -> str:
    """A folder name for the results of the machine ``description`` (:func:`machine_description`)
    describes: ``cuda-`` and the GPU's model on a GPU, else ``cpu-``, the CPU's family (when its
    model name holds one of :data:`CPU_FAMILIES`) and torch's vector instruction set for it.

    Args:
        description: at least ``device`` and ``cpu_capability``, ``cpu`` for a CPU and ``gpu``
            for a CUDA device.

    Example:
        >>> machine_folder({"device": "cpu", "cpu": "AMD EPYC 7B13", "cpu_capability": "AVX2"})
        'cpu-epyc-avx2'
        >>> machine_folder({"device": "cuda:0", "gpu": "NVIDIA H100 80GB HBM3", "cpu_capability": "AVX2"})
        'cuda-h100'
    """
    if str(description["device"]).startswith("cuda"):
        model = []
        for word in _words(description["gpu"]):
            if _GPU_PACKAGING.match(word):
                break
            if word not in _GPU_VENDOR_WORDS:
                model.append(word)
        return "-".join(["cuda", *model])
    family = [word for word in _words(description.get("cpu", "")) if word in CPU_FAMILIES][:1]
    return "-".join(["cpu", *family, *_words(description["cpu_capability"])])


def _words(text: object) -> list[str]:
    """The lower-case runs of letters and digits in ``text``: "Intel(R) Xeon(R)" -> intel, r, xeon, r."""
    return re.findall(r"[a-z0-9]+", str(text).lower())


def _version_of(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _print_folder(arguments: list[str]) -> None:
    if len(arguments) > 1:
        raise SystemExit(f"usage: python -m ecanet.bench.machine [cpu|cuda|cuda:N], got {' '.join(arguments)}")
    try:
        device = bench_device(arguments[0] if arguments else "cpu")
    except ValueError as error:
        raise SystemExit(f"ecanet.bench.machine: {error}") from None
    print(machine_folder(machine_description(device)))


if __name__ == "__main__":
    _print_folder(sys.argv[1:])
