"""What ecanet needs of the packages it depends on: release numbers, the oldest release of each
that ecanet was tested with, and a check that the optional ones a task needs are installed.

The lower bounds live in ``pyproject.toml`` alone (CI runs the whole suite on exactly them, ``make
test-floor``); ecanet reads them back from its installed metadata. A task that needs an extra's
package (training needs tqdm and matplotlib, ONNX export onnx, onnxscript and onnxruntime) calls
:func:`require` before any work, so a missing or too old package is named with the ``pip install``
that fixes it, instead of failing deep inside, or after the work is done.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import re

__all__ = ["MissingDependency", "lower_bounds", "release", "require"]

_LOWER_BOUND = re.compile(r"""([A-Za-z0-9_.-]+)>=([\w.]+)(?:;\s*extra\s*==\s*["'](\w+)["'])?""")
_MODULES = {"pillow": "PIL"}
"""Distributions whose module has another name."""


class MissingDependency(ImportError):
    """An optional package a task needs is not installed, or is older than ecanet supports."""


def release(version: str) -> tuple[int, ...]:
    """The numbers of a version string, up to its first part that does not start with one.

    A pre-release or local suffix is dropped with its part's letters: ``"0.7.0rc1"`` reads as
    ``(0, 7, 0)``, ``"3.8.0+git1234"`` as ``(3, 8, 0)``.

    Args:
        version: a version string such as ``module.__version__``.

    Example:
        >>> release("3.8.0+gitabc"), release("2.12"), release("0.7.0rc1"), release("1.0.dev3")
        ((3, 8, 0), (2, 12), (0, 7, 0), (1, 0))
    """
    numbers = []
    for part in version.split("."):
        digits = re.match(r"\d+", part)
        if digits is None:
            break
        numbers.append(int(digits[0]))
    return tuple(numbers)


@functools.cache
def _declared() -> tuple[tuple[str, tuple[int, ...], str | None], ...]:
    """``(distribution, lower bound, extra or None)`` of each requirement in ecanet's metadata (read
    once); none when ecanet runs from a source tree that was never installed."""
    try:
        requirements = importlib.metadata.requires("ecanet") or []
    except importlib.metadata.PackageNotFoundError:
        return ()
    matches = (_LOWER_BOUND.fullmatch(requirement.strip()) for requirement in requirements)
    return tuple((match[1].lower(), release(match[2]), match[3]) for match in matches if match is not None)


def lower_bounds(extra: str | None = None) -> dict[str, tuple[int, ...]]:
    """The ``>=`` bounds ecanet's installed metadata declares, by distribution name.

    Args:
        extra: an extra's name (``"train"``, ``"export"``, ``"dev"``), or ``None`` for the runtime
            dependencies.

    Returns:
        ``{name: release}``; empty when ecanet runs from a source tree that was never installed.

    Example:
        >>> lower_bounds()["torch"] >= (2, 12)
        True
    """
    return {name: bound for name, bound, declared_in in _declared() if declared_in == extra}


def require(purpose: str, *distributions: str, alternative: str | None = None) -> None:
    """Raises :class:`MissingDependency` unless each distribution is importable and at least at the
    lower bound ecanet declares for it.

    Args:
        purpose: what needs them, the start of the message (``"training"``, ``"ONNX export"``).
        *distributions: distribution names as ``pyproject.toml`` spells them (``"pillow"``).
        alternative: what works without them, added to the message.

    Raises:
        MissingDependency: naming each missing or too old package (with the release found) and the
            ``pip install`` of the extras that provide them.

    Example:
        >>> require("the layer", "torch", "numpy")
        >>> try:
        ...     require("telepathy", "no-such-package")
        ... except MissingDependency as error:
        ...     print(error)
        telepathy needs no-such-package: pip install no-such-package
    """
    declared = _declared()
    missing, outdated = [], {}
    for name in distributions:
        try:
            module = importlib.import_module(_MODULES.get(name, name))
        except ImportError:
            missing.append(name)
            continue
        oldest = max((bound for declared_name, bound, _ in declared if declared_name == name), default=())
        found = getattr(module, "__version__", None)
        if found is not None and release(found) < oldest:
            outdated[name] = f"{name}>={'.'.join(map(str, oldest))} (found {found})"
    if not missing and not outdated:
        return
    needed = [*missing, *outdated]
    extras = sorted({extra for name, _, extra in declared if name in needed and extra is not None})
    upgrade = "--upgrade " if outdated else ""
    command = (
        f"pip install {upgrade}'ecanet[{','.join(extras)}]'" if extras else f"pip install {upgrade}{' '.join(needed)}"
    )
    instead = f" (or {alternative})" if alternative else ""
    raise MissingDependency(f"{purpose} needs {', '.join([*missing, *outdated.values()])}: {command}{instead}")
