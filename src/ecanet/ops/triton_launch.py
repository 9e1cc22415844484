"""Launching a Triton kernel for a fraction of the host time of ``kernel[grid](...)``.

Before every launch, ``kernel[grid](*args)`` binds and specialises each argument, builds a cache
key and checks the kernel's globals: measured on an H200 machine's host (Triton 3.6), 20 µs per
launch, against 6 µs for the compiled kernel's own launcher. ECA launches two kernels per layer
call, so this binding alone cost about as much host time as timm's whole four-operator layer,
and a GPU network whose host issues work barely ahead of the GPU waits for it.

:class:`KernelLauncher` keeps each compiled specialisation under a key that determines
everything Triton specialises on (the constexpr values, the dtype and 16-byte alignment of each
tensor, and the exact value of each other argument) plus each tensor's device, and hands later
launches with that key straight to the compiled kernel's launcher. A key's first launch goes through
``kernel[grid]``, which compiles the kernel (or finds it in Triton's cache) and returns it.

It launches through ``kernel[grid]`` every time for CPU tensors and interpreted kernels
(``TRITON_INTERPRET=1``), while a launch hook is set (profilers such as Proton read the launch
metadata that path builds), and with Triton releases it was not checked with (before 3.4 the
launchers take other arguments; later ones may again).
"""

from __future__ import annotations

import contextlib
import functools
from typing import Any

import torch
from torch import Tensor

__all__ = ["KernelLauncher", "launch_key"]

_STAY = contextlib.nullcontext()

_MOST_SPECIALISATIONS = 4096
"""Keys kept per kernel; past this (endlessly varying shapes), launches take Triton's own path."""


_CHECKED_TRITON = ((3, 4), (3, 8))
"""Triton releases whose compiled kernels are launched the way checked here (3.4, 3.6 and 3.8 read;
3.6 and 3.8 run). Others launch through ``kernel[grid]``: slower, never wrong."""


@functools.cache
def _launch_hooks() -> Any:
    """Triton's runtime settings, whose launch hooks say when a profiler is listening, or ``None``
    where direct launches are not used (a Triton outside :data:`_CHECKED_TRITON`)."""
    try:
        import triton
        from triton import knobs
    except ImportError:
        return None
    if not _CHECKED_TRITON[0] <= _release(triton.__version__) <= _CHECKED_TRITON[1]:
        return None
    return knobs.runtime


def _release(version: str) -> tuple[int, int]:
    """``(major, minor)`` of a version string such as ``"3.6.0"`` or ``"3.8.0+git1234"``.

    Example:
        >>> _release("3.8.0+gitabc"), _release("3.10")
        ((3, 8), (3, 10))
    """
    major, minor = version.split(".")[:2]
    return int(major), int("".join(c for c in minor if c.isdigit()) or 0)


@functools.cache
def _stream_of() -> Any:
    """The function Triton's own launches take the current CUDA stream from (a raw handle, per device index)."""
    from triton.runtime import driver

    return driver.active.get_current_stream


class KernelLauncher:
    """Launches one ``@triton.jit`` kernel on a one-dimensional grid, skipping Triton's per-launch binding.

    Args:
        kernel: the ``@triton.jit`` function. Its constexpr parameters must come after all others
            (they are passed by keyword, the others by position).

    A call ``launcher(programs, *args, **constexprs)`` does what ``kernel[(programs,)](*args,
    **constexprs)`` does.
    """

    def __init__(self, kernel: Any) -> None:
        self.kernel = kernel
        self._compiled: dict[tuple, Any] = {}
        # An interpreted kernel (TRITON_INTERPRET=1) has no parameter list and nothing compiled to keep.
        self._constexpr_names = _trailing_constexprs(kernel) if hasattr(kernel, "params") else None

    def __repr__(self) -> str:
        return f"KernelLauncher({self.kernel.fn.__name__})"

    def __call__(self, programs: int, *args: Any, **constexprs: Any) -> None:
        """Runs ``programs`` programs of the kernel on ``args`` (the first a tensor on the launch device)."""
        first = args[0]
        hooks = _launch_hooks() if first.is_cuda and self._constexpr_names is not None else None
        if hooks is None:
            self.kernel[(programs,)](*args, **constexprs)
            return
        index = first.get_device()
        with _current_device(index):
            if _listening(hooks.launch_enter_hook) or _listening(hooks.launch_exit_hook):
                self.kernel[(programs,)](*args, **constexprs)
                return
            values = tuple(constexprs[name] for name in self._constexpr_names)
            key = launch_key(index, values, args)
            compiled = self._compiled.get(key)
            if compiled is None:
                compiled = self.kernel[(programs,)](*args, **constexprs)
                if len(self._compiled) < _MOST_SPECIALISATIONS:
                    self._compiled[key] = compiled
                return
            compiled.run(
                programs,
                1,
                1,
                _stream_of()(index),
                compiled.function,
                compiled.packed_metadata,
                None,
                None,
                None,
                *args,
                *values,
            )


def _trailing_constexprs(kernel: Any) -> tuple[str, ...]:
    """Names of the kernel's constexpr parameters, which must come after all others."""
    params = kernel.params
    first = next((i for i, p in enumerate(params) if p.is_constexpr), len(params))
    if not all(p.is_constexpr for p in params[first:]):
        raise TypeError(f"{kernel.fn.__name__}: KernelLauncher needs the constexpr parameters last")
    return tuple(p.name for p in params[first:])


def _listening(hook: Any) -> bool:
    """Whether a launch hook is set. Since Triton 3.5 the setting holds a chain of hooks, empty
    when none is added; before, ``None``."""
    return hook is not None and bool(getattr(hook, "calls", True))


def launch_key(index: int, constexpr_values: tuple, args: tuple) -> tuple:
    """The key :class:`KernelLauncher` keeps a compiled specialisation under: the device index, the
    constexpr values and, per argument, a tensor's dtype, 16-byte alignment and device or any other
    argument's exact value. Two launches with one key get one specialisation from Triton (checked
    against Triton's own specialisation in the tests, which needs no GPU).

    Example:
        >>> x = torch.zeros(8)
        >>> launch_key(0, (4,), (x, 3)) == launch_key(0, (4,), (torch.ones(8), 3))
        True
    """
    return (index, constexpr_values, *(_tensor_key(a) if isinstance(a, Tensor) else a for a in args))


def _tensor_key(t: Tensor) -> tuple[torch.dtype, bool, int]:
    # What Triton specialises a pointer argument on (its element type and 16-byte alignment), and
    # its device: a tensor elsewhere must meet Triton's own check, never the GPU.
    return t.dtype, t.data_ptr() % 16 == 0, t.get_device()


def _current_device(index: int) -> contextlib.AbstractContextManager:
    """Makes ``index`` the current CUDA device if it is not already (Triton loads and launches kernels there)."""
    if _one_device() or index == torch.cuda.current_device():
        return _STAY
    return torch.cuda.device(index)


@functools.cache
def _one_device() -> bool:
    return torch.cuda.device_count() == 1
