"""Release numbers, and the oldest release of each dependency ecanet was tested with.

The lower bounds live in ``pyproject.toml`` alone (CI runs the whole suite on exactly them, ``make
test-floor``); ecanet reads them back from its installed metadata, so a dependency too old to work
gets a message that says which release is needed instead of a failure deep inside it.
"""

from __future__ import annotations

import importlib.metadata
import re

__all__ = ["lower_bounds", "release"]

_LOWER_BOUND = re.compile(r"""([A-Za-z0-9_.-]+)>=([\w.]+)(?:;\s*extra\s*==\s*["'](\w+)["'])?""")


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
    try:
        requirements = importlib.metadata.requires("ecanet") or []
    except importlib.metadata.PackageNotFoundError:
        return {}
    bounds = {}
    for requirement in requirements:
        match = _LOWER_BOUND.fullmatch(requirement.strip())
        if match is not None and match[3] == extra:
            bounds[match[1].lower()] = release(match[2])
    return bounds
