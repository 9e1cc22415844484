import math
import random

import pytest

from ecanet.experiments.statistics import (
    mean_std,
    median_interval,
    paired_difference,
    student_t_cdf,
    student_t_quantile,
)

PROBABILITIES = (0.6, 0.9, 0.95, 0.975, 0.995, 0.025, 0.2)


@pytest.mark.parametrize("p", PROBABILITIES)
def test_quantile_one_degree_of_freedom_is_cauchy(p):
    # df = 1 is the Cauchy distribution: F(t) = 1/2 + atan(t)/pi, so t = tan(pi (p - 1/2)).
    assert student_t_quantile(p, 1) == pytest.approx(math.tan(math.pi * (p - 0.5)), rel=1e-12)


@pytest.mark.parametrize("p", PROBABILITIES)
def test_quantile_two_degrees_of_freedom_closed_form(p):
    # df = 2: F(t) = 1/2 + t / (2 sqrt(2 + t^2)), solved for t: (2p - 1) / sqrt(2 p (1 - p)).
    assert student_t_quantile(p, 2) == pytest.approx((2 * p - 1) / math.sqrt(2 * p * (1 - p)), rel=1e-12)


@pytest.mark.parametrize(
    ("df", "expected"),
    # Two-sided 95% critical values from printed t tables (4 decimals).
    [(3, 3.1824), (4, 2.7764), (5, 2.5706), (9, 2.2622), (10, 2.2281), (30, 2.0423), (120, 1.9799)],
)
def test_quantile_matches_t_table(df, expected):
    assert student_t_quantile(0.975, df) == pytest.approx(expected, abs=5e-5)


@pytest.mark.parametrize("t", [-3.0, -0.7, 0.4, 2.5])
def test_cdf_three_degrees_of_freedom_closed_form(t):
    # df = 3: F(t) = 1/2 + (atan(t/sqrt3) + (t/sqrt3) / (1 + t^2/3)) / pi.
    u = t / math.sqrt(3)
    assert student_t_cdf(t, 3) == pytest.approx(0.5 + (math.atan(u) + u / (1 + u * u)) / math.pi, rel=1e-12)


def test_cdf_approaches_normal_for_many_degrees_of_freedom():
    assert student_t_cdf(1.959964, 2000) == pytest.approx(0.975, abs=2e-4)


def test_mean_std_by_hand():
    # mean = 10/4 = 2.5; squared deviations 2.25 + 0.25 + 0.25 + 2.25 = 5; 5 / 3 -> std sqrt(5/3).
    assert mean_std([1.0, 2.0, 3.0, 4.0]) == pytest.approx((2.5, math.sqrt(5 / 3)))
    mean, std = mean_std([7.5])
    assert mean == 7.5 and math.isnan(std)


def test_paired_difference_by_hand():
    candidate = [91.2, 90.8, 91.9]
    baseline = [90.5, 90.9, 91.0]
    # differences 0.7, -0.1, 0.9: mean 0.5, deviations 0.2, -0.6, 0.4 -> sum sq 0.56, var 0.28
    # se = sqrt(0.28 / 3); t_{0.975, 2} = 4.302652729749464 (closed form for df = 2)
    half_width = 4.302652729749464 * math.sqrt(0.28 / 3)
    result = paired_difference(candidate, baseline)
    assert result.count == 3
    assert result.mean == pytest.approx(0.5)
    assert result.std == pytest.approx(math.sqrt(0.28))
    assert result.low == pytest.approx(0.5 - half_width)
    assert result.high == pytest.approx(0.5 + half_width)
    assert "paired t" in result.test


def test_paired_difference_is_not_the_unpaired_one():
    # A constant per-seed improvement has zero spread: the paired interval collapses to the point,
    # although each variant alone varies a lot across seeds.
    result = paired_difference([80.0, 90.0, 85.0], [79.0, 89.0, 84.0], confidence=0.9)
    assert result.low == pytest.approx(1.0) and result.high == pytest.approx(1.0)


def test_single_seed_has_no_interval():
    result = paired_difference([71.0], [70.0])
    assert result.mean == 1.0 and result.low is None and result.high is None


def _coverage_by_counting(count: int, rank: int) -> float:
    """P(x_(rank) <= true median <= x_(count+1-rank)): between rank and count-rank values fall below it."""
    return sum(math.comb(count, below) for below in range(rank, count - rank + 1)) / 2**count


@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99])
@pytest.mark.parametrize("count", [6, 7, 8, 15, 16, 31, 40])
def test_median_interval_takes_the_narrowest_order_statistics_that_reach_the_confidence(count, confidence):
    generator = random.Random(count)
    values = [generator.uniform(0.5, 2.0) for _ in range(count)]
    result = median_interval(values, confidence)
    ordered = sorted(values)
    if result.low is None:
        assert _coverage_by_counting(count, 1) < confidence
        return
    rank = ordered.index(result.low) + 1
    assert result.high == ordered[count - rank]
    assert result.coverage == pytest.approx(_coverage_by_counting(count, rank), abs=1e-12)
    assert result.coverage >= confidence
    assert rank == (count + 1) // 2 or _coverage_by_counting(count, rank + 1) < confidence


def test_median_interval_by_hand():
    result = median_interval([5.0, 1.0, 4.0, 2.0, 3.0, 6.0], 0.95)  # six values: only [min, max] reaches 95%
    assert (result.median, result.low, result.high) == (3.5, 1.0, 6.0)
    assert result.coverage == pytest.approx(1 - 2 / 64)
    assert median_interval([1.0, 2.0, 3.0, 4.0, 5.0], 0.95).low is None  # [min, max] covers 1 - 2/32 < 95%


@pytest.mark.parametrize("values", [[math.nan, 1.0, 3.0, 2.0, 5.0, 6.0, 7.0], [1.0, 3.0, 2.0, 5.0, 6.0, 7.0, math.nan]])
def test_median_interval_refuses_nan_which_sorting_leaves_in_place(values):
    with pytest.raises(ValueError, match=r"values must be numbers, got NaN at positions \[\d\]"):
        median_interval(values)


def test_median_interval_covers_a_skewed_distributions_median_as_often_as_it_says():
    generator = random.Random(0)
    trials, covered = 4000, 0
    for _ in range(trials):
        result = median_interval([generator.expovariate(1.0) for _ in range(15)], 0.95)
        covered += result.low <= math.log(2.0) <= result.high
    assert result.coverage == pytest.approx(0.9648, abs=1e-4)
    assert abs(covered / trials - result.coverage) < 0.01  # about 3.5 binomial standard errors


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: paired_difference([1.0, 2.0], [1.0]), "pair up"),
        (lambda: paired_difference([1.0], [1.0], confidence=1.5), "confidence"),
        (lambda: paired_difference([], []), "empty"),
        (lambda: median_interval([]), "empty"),
        (lambda: median_interval([1.0], confidence=1.0), "confidence"),
        (lambda: student_t_quantile(1.0, 3), "p must"),
        (lambda: student_t_quantile(0.5, 0), "df"),
        (lambda: student_t_cdf(0.5, 2.5), "df"),
    ],
)
def test_bad_arguments_are_named(call, message):
    with pytest.raises(ValueError, match=message):
        call()
