"""Summary statistics for comparing variants over seeds (mean ± std and a paired t interval) and
timings over rounds (the median with a distribution-free interval).

A compare trains every variant with the same seeds (same data order and augmentation), so the
fair question is "how much better is the variant than the baseline *on the same seed*?". The
per-seed differences ``d_i = variant_i - baseline_i`` get a two-sided Student t confidence
interval ``mean(d) ± t_{(1+c)/2, n-1} * std(d) / sqrt(n)`` (the paired t interval). The t
quantile is computed here from the exact closed form of the Student t distribution for integer
degrees of freedom (Abramowitz & Stegun 26.7.3-4), so no statistics package is needed.

Timings are not normal: a busy machine adds long outliers, so benchmarks summarise rounds by their
median. Its interval comes from order statistics (the sign-test interval): the ``j``-th smallest
and ``j``-th largest of ``n`` values enclose the true median with probability
``1 - 2 P(B <= j - 1)``, ``B ~ Binomial(n, 1/2)``, whatever the distribution.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

__all__ = [
    "MedianInterval",
    "PairedDifference",
    "mean_std",
    "median_interval",
    "paired_difference",
    "student_t_cdf",
    "student_t_quantile",
]

PAIRED_TEST_NAME = "two-sided paired t interval over seeds"


def _check_degrees_of_freedom(df: int) -> None:
    if isinstance(df, bool) or not isinstance(df, int) or df < 1:
        raise ValueError(f"df (degrees of freedom) must be a positive int, got {df!r}")


def student_t_cdf(t: float, df: int) -> float:
    """``P(T <= t)`` for Student's t distribution with ``df`` (integer) degrees of freedom.

    Uses the finite series in ``theta = atan(t / sqrt(df))``, which is exact for integer ``df``.

    Args:
        t: the point at which to evaluate the distribution function.
        df: degrees of freedom, a positive int.

    Returns:
        The probability, in ``[0, 1]``.

    Example:
        >>> student_t_cdf(0.0, 5)
        0.5
        >>> round(student_t_cdf(1.0, 1), 6)  # Cauchy: 1/2 + atan(1)/pi
        0.75
    """
    _check_degrees_of_freedom(df)
    theta = math.atan(abs(t) / math.sqrt(df))
    sin, cos2 = math.sin(theta), math.cos(theta) ** 2
    # A(|t| | df) = P(-|t| < T < |t|): odd df start from theta, even df from sin(theta).
    if df % 2 == 1:
        term, series = math.cos(theta), 0.0
        for j in range(1, (df - 1) // 2 + 1):
            series += term
            term *= cos2 * (2 * j) / (2 * j + 1)
        central = 2.0 / math.pi * (theta + sin * series)
    else:
        term, series = 1.0, 0.0
        for j in range(1, df // 2 + 1):
            series += term
            term *= cos2 * (2 * j - 1) / (2 * j)
        central = sin * series
    return 0.5 + math.copysign(central, t) / 2.0


def student_t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile of Student's t distribution with ``df`` (integer) degrees of freedom.

    Inverts :func:`student_t_cdf` by bisection to full double precision.

    Args:
        p: probability, strictly between 0 and 1.
        df: degrees of freedom, a positive int.

    Returns:
        ``t`` with ``P(T <= t) = p``.

    Example:
        >>> round(student_t_quantile(0.975, 4), 4)  # the familiar table value
        2.7764
        >>> student_t_quantile(0.5, 3)
        0.0
    """
    if not (isinstance(p, (int, float)) and 0.0 < p < 1.0):
        raise ValueError(f"p must be a probability strictly between 0 and 1, got {p!r}")
    _check_degrees_of_freedom(df)
    if p == 0.5:
        return 0.0
    target = max(p, 1.0 - p)
    low, high = 0.0, 1.0
    while student_t_cdf(high, df) < target:
        low, high = high, high * 2.0
    for _ in range(200):
        middle = (low + high) / 2.0
        if middle in (low, high):
            break
        if student_t_cdf(middle, df) < target:
            low = middle
        else:
            high = middle
    return math.copysign((low + high) / 2.0, p - 0.5)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (``n - 1`` in the denominator) of ``values``.

    Args:
        values: one or more numbers (e.g. one accuracy per seed).

    Returns:
        ``(mean, std)``; the std of a single value is ``nan`` (undefined), not 0.

    Example:
        >>> mean_std([1.0, 2.0, 3.0])
        (2.0, 1.0)
    """
    if len(values) == 0:
        raise ValueError("values must hold at least one number, got an empty sequence")
    mean = math.fsum(values) / len(values)
    if len(values) == 1:
        return mean, math.nan
    variance = math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return mean, math.sqrt(variance)


@dataclass(frozen=True)
class PairedDifference:
    """Difference ``candidate - baseline`` over paired samples, with a t confidence interval.

    Attributes:
        mean: mean of the per-pair differences.
        std: sample std of the differences (``nan`` for one pair).
        count: number of pairs ``n``.
        low: lower end of the interval (``None`` when ``n < 2``: no interval from one pair).
        high: upper end of the interval (``None`` when ``n < 2``).
        confidence: the interval's confidence level, e.g. 0.95.
        test: the name of the procedure, for reports.
    """

    mean: float
    std: float
    count: int
    low: float | None
    high: float | None
    confidence: float
    test: str = PAIRED_TEST_NAME


def paired_difference(
    candidate: Sequence[float], baseline: Sequence[float], confidence: float = 0.95
) -> PairedDifference:
    """Mean of ``candidate[i] - baseline[i]`` with a two-sided paired t confidence interval.

    Args:
        candidate: one value per seed for the variant.
        baseline: one value per seed for the baseline, in the same seed order.
        confidence: confidence level of the interval, strictly between 0 and 1.

    Returns:
        A :class:`PairedDifference`; with a single pair it carries no interval.

    Example:
        >>> d = paired_difference([71.0, 73.0, 72.0], [70.0, 71.0, 70.0])
        >>> round(d.mean, 4), round(d.low, 4), round(d.high, 4)
        (1.6667, 0.2324, 3.1009)
        >>> paired_difference([71.0], [70.0]).low is None
        True
    """
    if len(candidate) != len(baseline):
        raise ValueError(
            f"candidate and baseline must pair up seed by seed, got {len(candidate)} and {len(baseline)} values"
        )
    if not (isinstance(confidence, float) and 0.0 < confidence < 1.0):
        raise ValueError(f"confidence must be a float strictly between 0 and 1, got {confidence!r}")
    differences = [c - b for c, b in zip(candidate, baseline, strict=True)]
    mean, std = mean_std(differences)
    count = len(differences)
    if count < 2:
        return PairedDifference(mean, std, count, None, None, confidence)
    half_width = student_t_quantile((1.0 + confidence) / 2.0, count - 1) * std / math.sqrt(count)
    return PairedDifference(mean, std, count, mean - half_width, mean + half_width, confidence)


@dataclass(frozen=True)
class MedianInterval:
    """The median of some values with a distribution-free confidence interval for the true median.

    Attributes:
        median: the sample median.
        low: lower end of the interval, one of the values (``None`` when too few values for the
            confidence asked: fewer than 6 for 0.95).
        high: upper end of the interval, one of the values (``None`` likewise).
        coverage: the interval's exact coverage, at least the confidence asked (``nan`` without one).
    """

    median: float
    low: float | None
    high: float | None
    coverage: float


def median_interval(values: Sequence[float], confidence: float = 0.95) -> MedianInterval:
    """The median of ``values`` with the narrowest order-statistic interval of at least ``confidence``.

    With the values sorted, ``[x_(j), x_(n+1-j)]`` (1-based) covers the true median of any
    continuous distribution with probability ``1 - 2 P(B <= j - 1)``, ``B ~ Binomial(n, 1/2)``;
    the largest ``j`` whose coverage reaches ``confidence`` is taken.

    Args:
        values: one or more independent samples (e.g. one time ratio per benchmark round).
        confidence: the least coverage wanted, strictly between 0 and 1.

    Returns:
        A :class:`MedianInterval`; without enough values for ``confidence`` it carries no interval.

    Example:
        >>> m = median_interval([float(v) for v in range(1, 16)])  # 15 values: 4th smallest to 4th largest
        >>> m.median, m.low, m.high, round(m.coverage, 4)
        (8.0, 4.0, 12.0, 0.9648)
        >>> median_interval([1.0, 2.0, 3.0]).low is None
        True
    """
    if len(values) == 0:
        raise ValueError("values must hold at least one number, got an empty sequence")
    if not (isinstance(confidence, float) and 0.0 < confidence < 1.0):
        raise ValueError(f"confidence must be a float strictly between 0 and 1, got {confidence!r}")
    if unordered := [index for index, value in enumerate(values) if math.isnan(value)]:
        # NaN has no place in the order: sorted() would leave it where it was, and the interval with it.
        raise ValueError(f"values must be numbers, got NaN at positions {unordered}")
    ordered = sorted(values)
    count = len(ordered)
    outcomes = 2**count
    wanted = Fraction(confidence)
    rank, coverage = 0, None
    at_most_rank = 0  # outcomes of the n signs with at most `rank` values below the median
    while rank < (count + 1) // 2:
        at_most_rank += math.comb(count, rank)
        widened = Fraction(outcomes - 2 * at_most_rank, outcomes)  # coverage of [x_(rank+1), x_(n-rank)]
        if widened < wanted:
            break
        rank, coverage = rank + 1, widened
    median = statistics.median(ordered)
    if coverage is None:
        return MedianInterval(median, None, None, math.nan)
    return MedianInterval(median, ordered[rank - 1], ordered[count - rank], float(coverage))
