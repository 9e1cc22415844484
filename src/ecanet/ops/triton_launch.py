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
``kernel[grid]``, which compiles the kernel (or finds it in Triton's cache) and returns it. A
:class:`PlannedLaunch` fixes the grid, the constexprs and the trailing scalar arguments when it is
planned, so that part of the key is built once, not on every launch; a :class:`BoundLaunch`
serves a caller whose tensors keep their dtypes and device, and keys nothing after its first launch.

It launches through ``kernel[grid]`` every time for CPU tensors and interpreted kernels
(``TRITON_INTERPRET=1``), while a launch hook is set (profilers such as Proton read the launch
metadata that path builds), and with Triton releases it was not checked with (before 3.4 the
launchers take other arguments; later ones may again).
"""

from __future__ import annotations

import contextlib
import functools
import operator
from typing import Any

import torch
from torch import Tensor

from ecanet.dependencies import release

__all__ = ["BoundLaunch", "KernelLauncher", "PlannedLaunch", "launch_key"]

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
    if not _CHECKED_TRITON[0] <= release(triton.__version__)[:2] <= _CHECKED_TRITON[1]:
        return None
    return knobs.runtime


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
    **constexprs)`` does. A launch repeated with the same grid, constexprs and trailing scalar
    arguments is cheaper planned once (:meth:`plan`).
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
        self.plan(programs, (), constexprs)(*args)

    def plan(self, programs: int, scalars: tuple[int | float, ...], constexprs: dict[str, Any]) -> PlannedLaunch:
        """The launch of ``programs`` programs with ``scalars`` after the arguments given per launch.

        Args:
            programs: grid size (``0``: a launch runs nothing).
            scalars: the kernel's last non-constexpr arguments (sizes, strides, scales), never tensors.
            constexprs: the constexpr parameters by name.

        Example:
            >>> from ecanet.ops.triton_jit import channel_reduce_kernel
            >>> options = {"PRODUCT": False, "RELU": False, "SUBTRACT": False, "BLOCK_C": 4, "BLOCK_S": 4}
            >>> KernelLauncher(channel_reduce_kernel).plan(0, (8,), options)
            PlannedLaunch(channel_reduce_kernel, programs=0)
        """
        return PlannedLaunch(self, programs, scalars, constexprs)


class PlannedLaunch:
    """A launch of a :class:`KernelLauncher`'s kernel whose grid, constexprs and trailing scalar
    arguments are fixed: ``plan(*args)`` does what ``kernel[(programs,)](*args, *scalars,
    **constexprs)`` does.

    What is fixed goes into the key of the compiled specialisation once, when planned; a launch
    keys only its own arguments. On a GPU, where ECA's cost is the host's time per call, a plan is
    kept with the geometry it serves (:mod:`ecanet.ops.triton_kernels`).
    """

    __slots__ = ("_fixed", "_values", "constexprs", "launcher", "programs", "scalars")

    def __init__(
        self, launcher: KernelLauncher, programs: int, scalars: tuple[int | float, ...], constexprs: dict[str, Any]
    ) -> None:
        if any(isinstance(value, Tensor) for value in scalars):
            raise TypeError("a planned launch's scalars are fixed values: pass tensors per launch")
        names = launcher._constexpr_names
        if names is not None and not set(names) <= constexprs.keys():
            missing = sorted(set(names) - constexprs.keys())
            raise TypeError(f"{launcher.kernel.fn.__name__}: constexprs {missing} not given")
        self.launcher, self.programs, self.scalars, self.constexprs = launcher, programs, tuple(scalars), constexprs
        self._values = None if names is None else tuple(constexprs[name] for name in names)
        self._fixed = (self._values, self.scalars)

    def __repr__(self) -> str:
        return f"PlannedLaunch({self.launcher.kernel.fn.__name__}, programs={self.programs})"

    def __call__(self, *args: Any) -> None:
        """Launches on ``args`` (the first a tensor on the launch device), unless ``programs`` is 0."""
        self.launch(args)

    def launch(self, args: tuple) -> Any:
        """Launches on ``args`` as a call does; returns the compiled kernel where it was launched
        directly or is kept under the launch's key now, else ``None`` (launched through Triton)."""
        if not self.programs:
            return None
        index = None if self._values is None else _cuda_index(args[0])
        hooks = None if index is None else _launch_hooks()
        if hooks is None:
            _compile_and_launch(self, args)
            return None
        with _current_device(index):
            if _listening(hooks.launch_enter_hook) or _listening(hooks.launch_exit_hook):
                _compile_and_launch(self, args)
                return None
            key = _key(index, self._fixed, args)
            compiled = self.launcher._compiled.get(key)
            if compiled is None:
                compiled = _compile_and_launch(self, args)
                if len(self.launcher._compiled) >= _MOST_SPECIALISATIONS:
                    return None
                self.launcher._compiled[key] = compiled
                return compiled
            _run(compiled, self, index, args)
            return compiled

    def bound(self) -> BoundLaunch:
        """This launch for one caller whose tensors keep their dtypes and device (see :class:`BoundLaunch`)."""
        return BoundLaunch(self)


class BoundLaunch:
    """A :class:`PlannedLaunch` for a caller whose launches all pass tensors (and nothing else) of the
    same dtypes on the same CUDA device, only their addresses changing from launch to launch, as a
    prepared call's do (:mod:`ecanet.ops.prepared_calls`: its key fixes the dtypes and the device).

    Triton specialises a kernel on its tensors' dtypes and 16-byte alignment. With the dtypes and
    the device fixed by the caller, a launch whose addresses are all 16-byte aligned needs the
    specialisation of an earlier one with aligned addresses and nothing else: it keys nothing and
    goes straight to that compiled kernel, passing the addresses as integers (so Triton's launcher
    neither asks each tensor for its address nor the driver about each address). Any other launch
    (the first, one with an unaligned address, one a profiler's launch hook should see) goes
    through the planned launch, keyed in full. On this project's CPU with Triton's launcher
    replaced (``ecanet bench --groups host``), keying the 38 arguments of a training step's four
    launches took about 25 us of the 205 us that ECA then added to a ResNet-50 bottleneck's step.

    Example:
        >>> from ecanet.ops.triton_jit import channel_reduce_kernel
        >>> options = {"PRODUCT": False, "RELU": False, "SUBTRACT": False, "BLOCK_C": 4, "BLOCK_S": 4}
        >>> KernelLauncher(channel_reduce_kernel).plan(0, (8,), options).bound()
        BoundLaunch(channel_reduce_kernel, programs=0)
    """

    __slots__ = ("_compiled", "_index", "plan")

    def __init__(self, plan: PlannedLaunch) -> None:
        self.plan = plan
        self._compiled: Any = None
        self._index = 0

    def __repr__(self) -> str:
        return f"BoundLaunch({self.plan.launcher.kernel.fn.__name__}, programs={self.plan.programs})"

    @property
    def compiled(self) -> Any:
        """The compiled kernel that this launch's aligned launches go to, or ``None`` before the
        first (:mod:`ecanet.ops.triton_training` launches it from C++)."""
        return self._compiled

    def __call__(self, *args: Tensor) -> None:
        """Launches on ``args``, tensors of the dtypes and the device of every other launch of this one."""
        plan, compiled = self.plan, self._compiled
        pointers = list(map(Tensor.data_ptr, args))
        aligned = functools.reduce(operator.or_, pointers, 0) % 16 == 0
        if compiled is None or not aligned:
            compiled = plan.launch(args)
            if compiled is not None and aligned:
                self._compiled, self._index = compiled, _cuda_index(args[0])
            return
        hooks = _launch_hooks()
        with _current_device(self._index):
            if _listening(hooks.launch_enter_hook) or _listening(hooks.launch_exit_hook):
                plan.launch(args)
                return
            _run(compiled, plan, self._index, pointers)


def _run(compiled: Any, plan: PlannedLaunch, index: int, args: Any) -> None:
    """Hands a launch of ``plan`` on ``args`` (tensors or their addresses) straight to the compiled
    kernel's launcher, on the current stream of device ``index``, with no launch hooks."""
    compiled.run(
        plan.programs,
        1,
        1,
        _stream_of()(index),
        compiled.function,
        compiled.packed_metadata,
        None,
        None,
        None,
        *args,
        *plan.scalars,
        *plan._values,
    )


def _cuda_index(t: Tensor) -> int | None:
    """The CUDA device index of a launch's first tensor, or ``None`` (launched through Triton)."""
    return t.get_device() if t.is_cuda else None


def _compile_and_launch(plan: PlannedLaunch, args: tuple) -> Any:
    """Triton's own launch (compiling the kernel, or finding it in Triton's cache); returns the
    compiled kernel."""
    return plan.launcher.kernel[(plan.programs,)](*args, *plan.scalars, **plan.constexprs)


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


def launch_key(index: int, constexpr_values: tuple, scalars: tuple, args: tuple) -> tuple:
    """The key a launch's compiled specialisation is kept under: the device index, the constexpr
    values and the trailing ``scalars`` (fixed by a :class:`PlannedLaunch`) and, per other argument,
    a tensor's dtype, 16-byte alignment and device or any other argument's exact value. Two
    launches with one key get one specialisation from Triton (checked against Triton's own
    specialisation in the tests, which needs no GPU).

    Example:
        >>> x = torch.zeros(8)
        >>> launch_key(0, (4,), (3,), (x,)) == launch_key(0, (4,), (3,), (torch.ones(8),))
        True
    """
    return _key(index, (constexpr_values, tuple(scalars)), args)


def _key(index: int, fixed: tuple, args: tuple) -> tuple:
    return (index, fixed, *map(_argument_key, args))


def _argument_key(a: Any) -> Any:
    # What Triton specialises a pointer argument on (its element type and 16-byte alignment), and
    # its device (a tensor elsewhere must meet Triton's own check, never the GPU); other values exactly.
    return (a.dtype, a.data_ptr() % 16 == 0, a.get_device()) if isinstance(a, Tensor) else a


def _current_device(index: int) -> contextlib.AbstractContextManager:
    """Makes ``index`` the current CUDA device if it is not already (Triton loads and launches kernels there)."""
    if _one_device() or index == torch.cuda.current_device():
        return _STAY
    return torch.cuda.device(index)


@functools.cache
def _one_device() -> bool:
    return torch.cuda.device_count() == 1
