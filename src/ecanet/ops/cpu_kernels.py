"""The compiled CPU backend: the C++ in ``csrc/``, built on first use, as :class:`~ecanet.ops.function.EcaKernels`.

The whole forward (pool, gate, rescale) and the whole backward (fused gate-gradient reduction,
gate gradient, input gradient) are one C++ call each, so a small activation costs little more
than its two memory passes, and training reads every large tensor the minimum number of times
(see the header of ``csrc/eca_cpu.cpp``). The sources are compiled with ``torch.utils.cpp_extension`` the
first time a CPU tensor takes the fast path (about a minute on two cores, needs a C++ compiler and ninja) and
cached in torch's extension directory (``TORCH_EXTENSIONS_DIR``, default
``~/.cache/torch_extensions``) under a name tied to the sources and their location, torch's version
and the CPU (it is compiled for the CPU it runs on). Set ``ECANET_CPU_KERNELS=0`` to skip it; when it cannot
be built, a warning names the reason and the ATen backend (:mod:`ecanet.ops.aten_kernels`) runs.
Prebuild with ``python -m ecanet.ops``. The same extension holds the C++ autograd node that
CUDA training calls take when :mod:`ecanet.ops.triton_training` is in use (it launches Triton's
compiled kernels through the CUDA driver, which it opens at run time: the build needs no CUDA).
``ECANET_BUFFER_CACHE_MB`` bounds the freed large buffers kept for reuse (see :func:`empty_like`;
``0`` keeps none). ``ECANET_CPU_CACHE_BYTES`` overrides the L2 size the forward plans for (samples
that fit are pooled and rescaled one by one, larger channels-first ones a block of channels at a
time, other larger ones one by one from the L3 when there is a sample for every thread; default:
the size the system reports).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import platform
import shutil
import sysconfig
import warnings
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import Tensor

__all__ = ["available", "backward", "build_name", "empty_like", "entry", "forward", "mean"]

SOURCE_DIR = Path(__file__).with_name("csrc")
DISABLE_VARIABLE = "ECANET_CPU_KERNELS"
_CFLAGS = ["-O3", "-march=native", "-ffp-contract=off", "-fno-trapping-math", "-fopenmp"]
"""``-ffp-contract=off``: every product is rounded before it is added, as torch's operators and
the AVX-512 path's explicit instructions do it, so results do not depend on the CPU the build
targets. (GCC otherwise fuses ``x * gate + identity`` into one FMA wherever the CPU has one, and on
an AVX2 machine a few bfloat16 outputs in 10^5 rounded the other way.)

``-fno-trapping-math``: floating-point operations raise no signals (nothing here enables them), so
GCC may evaluate both sides of a selection such as the ReLU's ``v > 0 ? v : 0`` or the sigmoid's
clamps. Without it GCC vectorises those loops only with AVX-512's masked instructions: on an AVX2
CPU (AMD EPYC) the sigmoid loop ran scalar, 8.4 ns per value against 0.9 ns with the flag, and
the gate of an 8x2048 descriptor took 139 us. Results are unchanged: the flag allows no
reordering or contraction."""


def _cpu_signature() -> str:
    """The CPU's feature flags (the build uses ``-march=native``), or the platform's name for it."""
    with contextlib.suppress(OSError):  # no /proc (not Linux): the platform's name below
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    return platform.processor() or platform.machine()


def _source_files() -> list[Path]:
    """The files the build compiles (``.cpp``, each on a thread of its own) and the headers they include."""
    return sorted(path for path in SOURCE_DIR.iterdir() if path.suffix in (".cpp", ".h"))


def build_name() -> str:
    """Extension name: changes with the sources, their location, the flags, torch's version and the CPU.

    The location counts because torch rebuilds an extension whose source files moved: two
    checkouts sharing one extension cache would otherwise rebuild each other's copy in turn.

    Example:
        >>> build_name().startswith("ecanet_cpu_")
        True
    """
    digest = hashlib.sha256()
    for source in _source_files():
        digest.update(source.name.encode() + b"\0" + source.read_bytes())
    for part in (str(SOURCE_DIR.resolve()), *_CFLAGS, torch.__version__, platform.machine(), _cpu_signature()):
        digest.update(part.encode())
    return f"ecanet_cpu_{digest.hexdigest()[:16]}"


def _put_ninja_on_path() -> None:
    """torch runs ``ninja`` from ``PATH``; the ``ninja`` package installs it next to this interpreter."""
    scripts = sysconfig.get_path("scripts")
    if shutil.which("ninja") is None and scripts and (Path(scripts) / "ninja").exists():
        os.environ["PATH"] = os.pathsep.join([scripts, os.environ.get("PATH", "")])


def available() -> bool:
    """Builds (once per machine) and loads the kernels; ``False`` when disabled or impossible.

    Example:
        >>> isinstance(available(), bool)
        True
    """
    return _extension() is not None


def entry(name: str) -> Callable[..., Any] | None:
    """One of the extension's one-step eager calls, ``"eca_inference"`` or ``"eca_training"`` (see
    :func:`ecanet.ops.dispatch.eager_call`) or ``"pooled_projection"`` (see
    :func:`ecanet.ops.dispatch.eager_pooled_projection`), one of the classes that launch Triton's
    kernels from C++ (see :mod:`ecanet.ops.triton_training`) or ``launch_through`` (where those
    launches go), or ``None`` without the extension.

    Example:
        >>> entry("eca_inference") is None or callable(entry("eca_inference"))
        True
    """
    extension = _extension()
    return None if extension is None else getattr(extension, name)


@functools.cache
def _extension() -> ModuleType | None:
    """The loaded extension module (its operators registered), or ``None``: see :func:`available`."""
    if os.environ.get(DISABLE_VARIABLE, "1") == "0":
        return None
    _put_ninja_on_path()
    # Importing cpp_extension logs a warning about CUDA on machines without it; not ours to show.
    logger = logging.getLogger("torch.utils.cpp_extension")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        from torch.utils import cpp_extension

        extension = cpp_extension.load(
            name=build_name(),
            sources=[str(path) for path in _source_files() if path.suffix == ".cpp"],
            extra_cflags=_CFLAGS,
            is_python_module=True,
            verbose=False,
        )
    except Exception as error:  # a missing compiler or ninja, a failed build: fall back, say why
        warnings.warn(
            f"ecanet: could not build the compiled CPU kernels ({type(error).__name__}: {error}); "
            f"using the slower ATen kernels. Set {DISABLE_VARIABLE}=0 to skip the attempt.",
            RuntimeWarning,
            stacklevel=3,
        )
        return None
    finally:
        logger.setLevel(level)
    return extension if hasattr(torch.ops.ecanet, "eca_forward") else None


def empty_like(like: Tensor) -> Tensor:
    """See :meth:`ecanet.ops.function.EcaKernels.empty_like`: on Linux, large buffers (1 MiB and
    more) are memory mappings of their own advised as transparent huge pages, so their first write
    page-faults 512 times less often, and a freed one is reused for the next buffer of its size
    (up to ``ECANET_BUFFER_CACHE_MB``, default 256, of freed mappings are kept), so it does not
    fault at all; requires :func:`available`."""
    return torch.ops.ecanet.fresh_like(like)


def mean(x: Tensor, channel_dim: int) -> Tensor:
    """See :meth:`ecanet.ops.function.EcaKernels.mean`; requires :func:`available`."""
    return torch.ops.ecanet.eca_mean(x, channel_dim)


def forward(
    x: Tensor,
    weight: Tensor,
    identity: Tensor | None,
    relu: bool,
    padding: str,
    gate: str,
    out: Tensor,
    channel_dim: int,
    known_mean: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """See :meth:`ecanet.ops.function.EcaKernels.forward`; requires :func:`available`."""
    return torch.ops.ecanet.eca_forward(x, weight, identity, relu, padding, gate, out, channel_dim, known_mean)


def backward(
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
    channel_dim: int,
) -> Tensor:
    """See :meth:`ecanet.ops.function.EcaKernels.backward`; requires :func:`available`."""
    return torch.ops.ecanet.eca_backward(
        grad, saved, relu_out, mean, gate, weight, padding, gate_kind, inplace, identity, masked, dx, channel_dim
    )
