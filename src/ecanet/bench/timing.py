"""Side-by-side timing: candidates run in alternating, rotating order, round after round.

Timing A fully and then B lets anything that drifts over time (other processes on a shared
machine, thermal throttling, the allocator warming up) land on one candidate only. Interleaving
the candidates within every round and rotating who goes first spreads that drift over all of
them, and medians with quartiles keep a few disturbed rounds from moving the result.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ecanet.experiments.statistics import MedianInterval, median_interval

__all__ = ["TimingStats", "paired_ratio", "time_side_by_side"]


@dataclass(frozen=True)
class TimingStats:
    """Per-call wall-clock time of one candidate over the measured rounds.

    Attributes:
        median_s: median seconds per call.
        p25_s: 25th percentile of seconds per call.
        p75_s: 75th percentile of seconds per call.
        rounds: number of measured rounds (warm-up rounds excluded).
        samples_s: seconds per call in each measured round, in round order (empty where not kept).
    """

    median_s: float
    p25_s: float
    p75_s: float
    rounds: int
    samples_s: tuple[float, ...] = ()


def paired_ratio(candidate: TimingStats, reference: TimingStats, confidence: float = 0.95) -> MedianInterval:
    """The median over rounds of ``candidate / reference`` within the same round, with its
    distribution-free ``confidence`` interval (:func:`ecanet.experiments.statistics.median_interval`;
    none under 6 rounds at 0.95); the median is ``nan`` without a sample for every round of both.

    Candidates timed side by side share each round's conditions, so the ratio within a round
    cancels whatever slowed the whole machine for longer than a round (other processes on a shared
    machine), which a ratio of the two medians keeps. The interval says how far the rounds left
    that ratio uncertain: an overhead goal is met when its upper end is within the goal.

    Example:
        >>> slowing_down = TimingStats(2.0, 1.0, 3.0, 3, (1.0, 2.0, 3.0))
        >>> paired_ratio(TimingStats(2.2, 1.1, 3.3, 3, (1.1, 2.2, 3.3)), slowing_down).median
        1.1
    """
    if not candidate.samples_s or len(candidate.samples_s) != len(reference.samples_s):
        return MedianInterval(math.nan, None, None, math.nan)
    pairs = zip(candidate.samples_s, reference.samples_s, strict=True)
    return median_interval([mine / theirs for mine, theirs in pairs], confidence)


def time_side_by_side(
    candidates: Mapping[str, Callable[[], object]],
    *,
    rounds: int = 15,
    warmup: int = 2,
    min_round_seconds: float = 0.0,
    synchronize: Callable[[], object] | None = None,
) -> dict[str, TimingStats]:
    """Times every candidate in every round, rotating the order from round to round.

    In round ``r`` the candidates run in their given order rotated left by ``r``, so each one is
    first equally often. Within a round a candidate is called repeatedly until at least
    ``min_round_seconds`` have passed (at least once); the round's sample is the mean time per
    call. The first ``warmup`` rounds run but are not recorded. For asynchronous work (CUDA),
    pass ``synchronize``: it runs before a round's clock starts and before it stops, so a round
    measures the work it queued, and calls within a round queue back to back as in a network.

    Args:
        candidates: name -> zero-argument callable to time. At least one.
        rounds: measured rounds (``>= 1``).
        warmup: unrecorded rounds before the measured ones (``>= 0``).
        min_round_seconds: minimum time spent on one candidate per round (``>= 0``); raise it for
            calls much shorter than the timer's resolution.
        synchronize: waits for queued asynchronous work (e.g. ``torch.cuda.synchronize``), or ``None``.

    Returns:
        name -> :class:`TimingStats`, in the order of ``candidates``.

    Example:
        >>> stats = time_side_by_side({"sum": lambda: sum(range(100)), "max": lambda: max(range(100))}, rounds=3)
        >>> list(stats), stats["sum"].rounds
        (['sum', 'max'], 3)
        >>> stats["sum"].p25_s <= stats["sum"].median_s <= stats["sum"].p75_s
        True
    """
    if not candidates:
        raise ValueError("candidates must hold at least one name -> callable, got an empty mapping")
    for name, candidate in candidates.items():
        if not callable(candidate):
            raise TypeError(f"candidate {name!r} must be a zero-argument callable, got {type(candidate).__name__}")
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ValueError(f"rounds must be an int >= 1, got {rounds!r}")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup must be an int >= 0, got {warmup!r}")
    if not min_round_seconds >= 0:
        raise ValueError(f"min_round_seconds must be >= 0, got {min_round_seconds!r}")

    names = list(candidates)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(warmup + rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            seconds = _time_one_round(candidates[name], min_round_seconds, synchronize or _no_wait)
            if round_index >= warmup:
                samples[name].append(seconds)
    return {name: _summarise(samples[name]) for name in names}


def _no_wait() -> None:
    return None


def _time_one_round(
    candidate: Callable[[], object], min_round_seconds: float, synchronize: Callable[[], object]
) -> float:
    """Mean seconds per call of ``candidate`` over at least ``min_round_seconds`` (at least one call)."""
    calls = 0
    synchronize()
    start = time.perf_counter()
    while True:
        candidate()
        calls += 1
        if time.perf_counter() - start >= min_round_seconds:
            synchronize()
            return (time.perf_counter() - start) / calls


def _summarise(samples: list[float]) -> TimingStats:
    if len(samples) == 1:
        return TimingStats(samples[0], samples[0], samples[0], 1, tuple(samples))
    p25, median, p75 = statistics.quantiles(samples, n=4, method="inclusive")
    return TimingStats(median, p25, p75, len(samples), tuple(samples))
