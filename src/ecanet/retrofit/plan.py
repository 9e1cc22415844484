"""Deciding where ECA goes in a model, without touching it: strategies, patterns, kernel sizes.

Strategies, in order of preference, for the whole model:

1. known block families (torchvision, timm), see :mod:`ecanet.retrofit.families`;
2. residual additions found by torch.fx, see :mod:`ecanet.retrofit.fx_residuals`;
3. after every feature-map normalization, see :mod:`ecanet.retrofit.norm_fallback`.

The first one that finds anything wins. ``replace_se=True`` adds the swaps of
:mod:`ecanet.retrofit.se_swap` on top.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from torch import nn

from ecanet.functional import eca_kernel_size
from ecanet.layers.eca import ECA
from ecanet.retrofit.families import SE_REASON, find_family_places
from ecanet.retrofit.fx_residuals import find_residual_places
from ecanet.retrofit.norm_fallback import find_norm_places
from ecanet.retrofit.places import Candidate, SkippedPlace, walk
from ecanet.retrofit.recognize import attention_kind
from ecanet.retrofit.report import RetrofitPlace, RetrofitReport
from ecanet.retrofit.se_swap import find_se_places

__all__ = ["ALREADY_NATIVE", "ECA_OPTIONS", "KernelSize", "check_eca_options", "plan_eca"]

KernelSize = str | int | Callable[[str, int], int]

ALREADY_NATIVE = "already has ECA (the model's own)"

# Keyword arguments add_eca passes on to every new ecanet.ECA.
ECA_OPTIONS = ("gamma", "beta", "padding", "pooling", "gate", "shared")


def _patterns(argument: str, value: str | Iterable[str] | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    message = f"{argument} must be a pattern string or an iterable of them, got {value!r}"
    if isinstance(value, str):
        return (value,)
    try:
        patterns = tuple(value)
    except TypeError:
        raise TypeError(message) from None
    if not all(isinstance(p, str) for p in patterns):
        raise TypeError(message)
    return patterns


def _matches(name: str, patterns: tuple[str, ...]) -> str | None:
    """The first pattern matching ``name`` or one of its parents (``layer4`` matches ``layer4.0.bn3``)."""
    parts = name.split(".")
    scopes = [".".join(parts[: i + 1]) for i in range(len(parts))]
    return next((p for p in patterns if any(fnmatch.fnmatchcase(s, p) for s in scopes)), None)


def _check_kernel_size(kernel_size: object, source: str) -> int:
    if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be a positive odd int, got {kernel_size!r} from {source}")
    return kernel_size


def _kernel_resolver(kernel_size: KernelSize, eca_options: Mapping[str, Any]) -> Callable[[str, int], int]:
    if kernel_size == "adaptive":
        gamma, beta = eca_options.get("gamma", 2.0), eca_options.get("beta", 1.0)
        return lambda name, channels: eca_kernel_size(channels, gamma, beta)
    if callable(kernel_size):
        return lambda name, channels: _check_kernel_size(kernel_size(name, channels), f"kernel_size({name!r})")
    if isinstance(kernel_size, int) and not isinstance(kernel_size, bool):
        fixed = _check_kernel_size(kernel_size, "the kernel_size argument")
        return lambda name, channels: fixed
    raise ValueError(
        f"kernel_size must be 'adaptive', a positive odd int or a callable (name, channels) -> k, got {kernel_size!r}"
    )


def check_eca_options(eca_options: Mapping[str, Any]) -> None:
    """Raises ``TypeError`` for a keyword that is not an ECA option, ``ValueError`` for a bad value.

    Checked before anything is edited, so that a bad option never leaves a model half retrofitted.

    Example:
        >>> check_eca_options({"padding": "circular"})
    """
    unknown = sorted(set(eca_options) - set(ECA_OPTIONS))
    if unknown:
        raise TypeError(f"unexpected keyword argument(s) {unknown}; ECA options are {list(ECA_OPTIONS)}")
    ECA(8, 1, **eca_options, device="meta")


def _strategy_places(model: nn.Module, notes: list[str]) -> tuple[list[Candidate], list[SkippedPlace]]:
    """Insertion places from the first strategy that finds any."""
    places, skipped = find_family_places(model)
    if places or skipped:
        return places, skipped
    search = find_residual_places(model)
    if search.error is not None:
        notes.append(f"torch.fx could not trace the model ({search.error}); using the normalization fallback")
    elif search.additions:
        return search.places, search.skipped
    else:
        notes.append("torch.fx found no residual additions; using the normalization fallback")
    places, skipped = find_norm_places(model)
    if not places and not skipped:
        notes.append("no feature-map normalization layers either: nothing to follow with ECA")
    return places, skipped


def _native_eca(model: nn.Module) -> list[str]:
    """Names of ECA modules the model has of its own (not from a retrofit)."""
    found: list[str] = []

    def visit(name: str, module: nn.Module) -> bool:
        if attention_kind(module) == "eca":
            found.append(name)
            return False
        return True

    walk(model, visit)
    return found


def plan_eca(
    model: nn.Module,
    *,
    kernel_size: KernelSize = "adaptive",
    min_channels: int = 16,
    include: str | Iterable[str] | None = None,
    exclude: str | Iterable[str] | None = None,
    replace_se: bool = False,
    **eca_options: Any,
) -> RetrofitReport:
    """The places :func:`ecanet.add_eca` would give ECA, as a report; the model is not changed.

    Arguments as for :func:`ecanet.add_eca` (no ``optimizer``).

    Returns:
        A :class:`RetrofitReport` with ``applied=False``.

    Example:
        >>> import torch
        >>> plain = nn.Sequential(nn.Conv2d(3, 32, 3), nn.BatchNorm2d(32), nn.Conv2d(32, 8, 1), nn.BatchNorm2d(8))
        >>> [(p.name, p.kernel_size, p.strategy) for p in plan_eca(plain).places]
        [('1', 3, 'norm fallback')]
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(min_channels, bool) or not isinstance(min_channels, int) or min_channels < 1:
        raise ValueError(f"min_channels must be a positive int, got {min_channels!r}")
    if not isinstance(replace_se, bool):
        raise TypeError(f"replace_se must be a bool, got {replace_se!r}")
    check_eca_options(eca_options)
    resolve_kernel = _kernel_resolver(kernel_size, eca_options)
    includes, excludes = _patterns("include", include), _patterns("exclude", exclude)

    native = _native_eca(model)
    if native:
        note = "the model has ECA modules of its own; add_eca leaves such a model alone"
        return RetrofitReport((), tuple(SkippedPlace(n, ALREADY_NATIVE) for n in native), (note,), applied=False)

    notes: list[str] = []
    candidates, skipped = _strategy_places(model, notes)
    if replace_se:
        swaps, swapped = find_se_places(model)
        candidates, skipped = candidates + swaps, skipped + swapped
    elif any(s.reason == SE_REASON for s in skipped):
        notes.append("blocks with SE attention get no ECA on top; replace_se=True swaps their SE for ECA")
    order = {name: index for index, (name, _) in enumerate(model.named_modules())}
    candidates.sort(key=lambda c: order.get(c.name, len(order)))

    shared = eca_options.get("shared", True)
    places: list[RetrofitPlace] = []
    for candidate in candidates:
        reason = None
        if not candidate.name:
            reason = "the model itself: wrap it in a container to retrofit it"
        elif includes is not None and _matches(candidate.name, includes) is None:
            reason = f"not matched by include {list(includes)}"
        elif excludes is not None and (pattern := _matches(candidate.name, excludes)) is not None:
            reason = f"excluded by {pattern!r}"
        elif candidate.channels < min_channels:
            reason = f"{candidate.channels} channels < min_channels={min_channels}"
        if reason is not None:
            skipped.append(SkippedPlace(candidate.name, reason))
            continue
        k = resolve_kernel(candidate.name, candidate.channels)
        removed = 0
        if candidate.action == "replace_se":
            removed = sum(p.numel() for p in model.get_submodule(candidate.name).parameters())
        places.append(
            RetrofitPlace(
                candidate.name,
                candidate.action,
                candidate.strategy,
                candidate.module_type,
                candidate.channels,
                candidate.channel_dim,
                k,
                k if shared else k * candidate.channels,
                removed,
            )
        )
    skipped.sort(key=lambda s: order.get(s.name, len(order)))
    return RetrofitReport(tuple(places), tuple(skipped), tuple(notes), applied=False)
