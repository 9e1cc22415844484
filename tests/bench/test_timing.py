import math
import time

import pytest

from ecanet.bench.timing import TimingStats, paired_ratio, time_side_by_side


def _recorder(calls: list[str], name: str):
    return lambda: calls.append(name)


def test_rounds_rotate_so_every_candidate_goes_first_equally_often():
    calls: list[str] = []
    names = ["a", "b", "c"]
    time_side_by_side({n: _recorder(calls, n) for n in names}, rounds=3, warmup=0)
    assert calls == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]


def test_warmup_rounds_run_but_are_not_counted():
    calls: list[str] = []
    stats = time_side_by_side({"a": _recorder(calls, "a"), "b": _recorder(calls, "b")}, rounds=4, warmup=3)
    assert calls.count("a") == calls.count("b") == 7
    assert stats["a"].rounds == stats["b"].rounds == 4


def test_returns_frozen_stats_in_candidate_order_with_ordered_quartiles():
    stats = time_side_by_side({"z": lambda: None, "y": lambda: sum(range(50))}, rounds=5, warmup=1)
    assert list(stats) == ["z", "y"]
    for s in stats.values():
        assert isinstance(s, TimingStats)
        assert 0 <= s.p25_s <= s.median_s <= s.p75_s
    with pytest.raises(AttributeError):
        stats["z"].median_s = 1.0  # type: ignore[misc]


def test_stats_keep_a_sample_for_every_measured_round():
    stats = time_side_by_side({"a": lambda: time.sleep(0.001), "b": lambda: None}, rounds=5, warmup=2)
    for s in stats.values():
        assert len(s.samples_s) == s.rounds == 5
        assert sorted(s.samples_s)[2] == s.median_s
    assert min(stats["a"].samples_s) > max(stats["b"].samples_s)


def _stats(samples: list[float]) -> TimingStats:
    ordered = sorted(samples)
    return TimingStats(ordered[len(ordered) // 2], ordered[0], ordered[-1], len(samples), tuple(samples))


def test_paired_ratio_cancels_what_slows_a_whole_round():
    # The machine is three times slower in rounds 2-4 (the last two slow for the candidate at other
    # times): its median lands on a fast round and the reference's on a slow one, while most
    # rounds' own ratios still say 1.1.
    reference = _stats([1.0, 1.0, 3.0, 3.0, 3.0])
    assert paired_ratio(_stats([1.1 * t for t in reference.samples_s]), reference).median == pytest.approx(1.1)
    candidate = _stats([1.1, 1.1, 3.3, 1.1, 9.9])
    assert paired_ratio(candidate, reference).median == pytest.approx(1.1)
    assert candidate.median_s / reference.median_s == pytest.approx(1.1 / 3)


def test_paired_ratio_is_nan_without_a_sample_for_every_round():
    assert math.isnan(paired_ratio(TimingStats(1.0, 1.0, 1.0, 3), TimingStats(1.0, 1.0, 1.0, 3)).median)
    missing_round = paired_ratio(_stats([1.0, 2.0]), _stats([1.0, 2.0, 3.0]))
    assert math.isnan(missing_round.median) and missing_round.low is None


def test_paired_ratio_interval_spans_the_rounds_own_ratios():
    # Fifteen rounds: the 95% interval runs from the 4th smallest to the 4th largest round ratio,
    # whatever the machine did to whole rounds.
    ratios = [1.00, 1.02, 1.04, 1.05, 1.06, 1.07, 1.08, 1.09, 1.10, 1.11, 1.12, 1.13, 1.20, 1.30, 1.60]
    slowdowns = [1.0, 3.0, 1.0, 2.0, 1.0, 5.0, 1.0, 1.0, 2.0, 1.0, 1.0, 4.0, 1.0, 1.0, 1.0]
    reference = _stats(slowdowns)
    paired = paired_ratio(_stats([r * s for r, s in zip(ratios, slowdowns, strict=True)]), reference)
    assert paired.median == pytest.approx(1.09)
    assert (paired.low, paired.high) == (pytest.approx(1.05), pytest.approx(1.13))
    assert paired.coverage >= 0.95
    assert paired_ratio(_stats(ratios[:5]), _stats([1.0] * 5)).low is None  # five rounds cannot reach 95%


def test_single_round_gives_equal_quartiles():
    s = time_side_by_side({"a": lambda: None}, rounds=1, warmup=0)["a"]
    assert s.rounds == 1 and s.p25_s == s.median_s == s.p75_s


def test_min_round_seconds_repeats_a_short_call_within_a_round():
    calls: list[str] = []
    time_side_by_side({"a": _recorder(calls, "a")}, rounds=2, warmup=0, min_round_seconds=0.005)
    assert len(calls) > 2


def test_synchronize_waits_for_queued_work_inside_the_timed_round():
    # A stand-in for a GPU stream: calls only queue work; waiting on the stream does it (10 ms each).
    queued: list[int] = []
    events: list[str] = []

    def wait() -> None:
        events.append("wait")
        time.sleep(0.01 * len(queued))
        queued.clear()

    def launch() -> None:
        events.append("launch")
        queued.append(1)

    stats = time_side_by_side({"kernel": launch}, rounds=3, warmup=0, synchronize=wait)
    assert stats["kernel"].median_s >= 0.01  # the queued work was waited for before the clock stopped
    assert events == ["wait", "launch", "wait"] * 3
    unsynchronized = time_side_by_side({"kernel": launch}, rounds=3, warmup=0)
    assert unsynchronized["kernel"].median_s < 0.005


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"candidates": {}}, ValueError),
        ({"candidates": {"a": 3}}, TypeError),
        ({"candidates": {"a": lambda: None}, "rounds": 0}, ValueError),
        ({"candidates": {"a": lambda: None}, "warmup": -1}, ValueError),
        ({"candidates": {"a": lambda: None}, "min_round_seconds": -0.1}, ValueError),
    ],
)
def test_rejects_bad_arguments(kwargs, error):
    candidates = kwargs.pop("candidates")
    with pytest.raises(error):
        time_side_by_side(candidates, **kwargs)
