"""The record of a retrofit: which modules got ECA, how they were found, what it cost."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from ecanet.retrofit.places import SkippedPlace

__all__ = ["RetrofitPlace", "RetrofitReport", "SkippedPlace"]

_ACTIONS = {"insert": "insert", "replace_se": "swap SE"}


@dataclass(frozen=True)
class RetrofitPlace:
    """One ECA placed (or planned) in a model.

    Attributes:
        name: qualified name of the module ECA follows (``action="insert"``; after the retrofit it
            is an :class:`~ecanet.retrofit.wrappers.ECAAfter` holding that module) or replaces
            (``action="replace_se"``).
        action: ``"insert"`` or ``"replace_se"``.
        strategy: how the place was found: ``"family: <library block>"``, ``"fx residual"``,
            ``"norm fallback"`` or ``"SE swap"``.
        module_type: class name of the module at ``name`` before the retrofit.
        channels: width of the rescaled tensor (the ECA's ``channels``).
        channel_dim: ``1`` (channels first) or ``-1`` (channels last).
        kernel_size: the ECA kernel size k.
        params_added: parameters of the new ECA (k, or k * C without sharing).
        params_removed: parameters of the SE module it replaces (0 for insertions).
    """

    name: str
    action: str
    strategy: str
    module_type: str
    channels: int
    channel_dim: int
    kernel_size: int
    params_added: int
    params_removed: int = 0


@dataclass(frozen=True)
class RetrofitReport:
    """What :func:`ecanet.add_eca` did (or, from ``plan_eca``, would do) to a model.

    ``str(report)`` is a table of the places, followed by the skipped places and notes.

    Attributes:
        places: the ECA modules added, in module order.
        skipped: places considered but left alone, with the reason.
        notes: model-level remarks (which strategy was used and why, nothing to do, ...).
        applied: ``True`` once the model was edited, ``False`` for a plan.

    Example:
        >>> place = RetrofitPlace("layer1.0.bn2", "insert", "fx residual", "BatchNorm2d", 64, 1, 3, 3)
        >>> report = RetrofitReport((place,), (), (), applied=True)
        >>> report.params_added, report.param_delta, report.strategies
        (3, 3, {'fx residual': 1})
        >>> print(report)  # doctest: +NORMALIZE_WHITESPACE
        place         action  strategy     module       channels  k  params
        layer1.0.bn2  insert  fx residual  BatchNorm2d  64        3  +3
        1 ECA added (1 inserted, 0 SE swapped); parameters +3 (ECA) -0 (SE) = net +3
    """

    places: tuple[RetrofitPlace, ...]
    skipped: tuple[SkippedPlace, ...]
    notes: tuple[str, ...]
    applied: bool

    @property
    def params_added(self) -> int:
        """Parameters of all new ECA modules."""
        return sum(p.params_added for p in self.places)

    @property
    def params_removed(self) -> int:
        """Parameters of the SE modules swapped out."""
        return sum(p.params_removed for p in self.places)

    @property
    def param_delta(self) -> int:
        """Change in the model's parameter count (negative when swapping SE saves parameters)."""
        return self.params_added - self.params_removed

    @property
    def strategies(self) -> dict[str, int]:
        """How many places each strategy found."""
        return dict(Counter(p.strategy for p in self.places))

    def __len__(self) -> int:
        return len(self.places)

    def table(self, *, skipped: bool = True) -> str:
        """The report as aligned text.

        Args:
            skipped: also list the skipped places.
        """
        rows = [("place", "action", "strategy", "module", "channels", "k", "params")]
        for p in self.places:
            params = f"+{p.params_added}" + (f" -{p.params_removed}" if p.params_removed else "")
            channels = f"{p.channels}" + (" (last)" if p.channel_dim == -1 else "")
            rows.append((p.name, _ACTIONS[p.action], p.strategy, p.module_type, channels, str(p.kernel_size), params))
        lines = _align(rows) if self.places else ["no ECA placed"]
        inserted = sum(p.action == "insert" for p in self.places)
        verb = "added" if self.applied else "planned"
        lines.append(
            f"{len(self.places)} ECA {verb} ({inserted} inserted, {len(self.places) - inserted} SE swapped); "
            f"parameters +{self.params_added} (ECA) -{self.params_removed} (SE) = net {self.param_delta:+d}"
        )
        if skipped and self.skipped:
            lines.append(f"skipped {len(self.skipped)}:")
            lines.extend(f"  {line}" for line in _align([(s.name, s.reason) for s in self.skipped]))
        lines.extend(f"note: {note}" for note in self.notes)
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def _align(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
