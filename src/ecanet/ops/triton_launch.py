"""Launching a Triton kernel for a fraction of the host time of ``kernel[grid](...)``.

Before every launch, ``kernel[grid](*args)`` binds and specialises each argument, builds a cache
key and checks the kernel's globals: measured on an H200 machine's host (Triton 3.6), 20 µs per
launch, against 6 µs for the compiled kernel's own launcher. ECA launches two kernels per layer
call, so this binding alone cost about as much host time as timm's whole four-operator layer,
and a GPU network whose host issues work barely ahead of the GPU waits for it.

:class:`KernelLauncher` keeps each compiled specialisation under a key that determines
everything Triton specialises on (the constexpr values, the dtype and 16-byte alignment of each
tensor, and the exact value of each other argument) and hands later launches with that key
straight to the compiled kernel's launcher. A key's first launch goes through
``kernel[grid]``, which compiles the kernel (or finds it in Triton's cache) and returns it.

It launches through ``kernel[grid]`` every time for CPU tensors (Triton's interpreter), while
a launch hook is set (profilers such as Proton read the launch metadata that path builds), and
with Triton releases before 3.4, whose launchers take other arguments.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Any

import torch
from torch import Tensor

__all__ = ["KernelLauncher", "direct_launches_supported"]

_STAY = contextlib.nullcontext()

_MOST_SPECIALISATIONS = 4096
"""Keys kept per kernel; past this (endlessly varying shapes), launches take Triton's own path."""


def direct_launches_supported() -> bool:
    """Whether this Triton's compiled kernels take the launcher arguments used here (Triton >= 3.4).

    Example:
        >>> isinstance(direct_launches_supported(), bool)
        True
    """
    return _launch_hooks() is not None


@functools.cache
def _launch_hooks() -> Any:
    """Triton's runtime settings, whose launch hooks say when a profiler is listening, or ``None`` before Triton 3.4."""
    try:
        from triton import knobs
    except ImportError:
        return None
    return knobs.runtime if hasattr(knobs, "runtime") and hasattr(knobs.runtime, "launch_enter_hook") else None


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

    @functools.cached_property
    def _constexpr_names(self) -> tuple[str, ...]:
        # Read on the first direct launch: an interpreted kernel (CPU tensors) has no parameter list.
        return tuple(p.name for p in self.kernel.params if p.is_constexpr)

    def __repr__(self) -> str:
        return f"KernelLauncher({self.kernel.fn.__name__})"

    def __call__(self, programs: int, *args: Any, **constexprs: Any) -> None:
        """Runs ``programs`` programs of the kernel on ``args`` (the first a tensor on the launch device)."""
        first = args[0]
        hooks = _launch_hooks() if first.is_cuda else None
        if hooks is None:
            self.kernel[(programs,)](*args, **constexprs)
            return
        index = first.get_device()
        with _current_device(index):
            if _listening(hooks.launch_enter_hook) or _listening(hooks.launch_exit_hook):
                self.kernel[(programs,)](*args, **constexprs)
                return
            values = tuple(constexprs[name] for name in self._constexpr_names)
            key = (index, values, *(_tensor_key(a) if isinstance(a, Tensor) else a for a in args))
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


def _listening(hook: Any) -> bool:
    """Whether a launch hook is set. Since Triton 3.5 the setting holds a chain of hooks, empty
    when none is added; before, ``None``."""
    return hook is not None and bool(getattr(hook, "calls", True))


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
