"""Small-sample statistics for seed replicates: means with t intervals, paired and unpaired differences.

An experiment has a handful of seeds per cell (3 to 10), so intervals use Student's t distribution, not
the normal one. The t quantile is computed here (regularised incomplete beta by Lentz's continued fraction,
inverted by bisection) so the workbench needs no scipy; tests/test_effects.py checks it against the table.

    >>> round(t_quantile(0.975, 4), 3)
    2.776
    >>> e = mean_interval([1.0, 2.0, 3.0])
    >>> e.mean, round(e.low, 3), round(e.high, 3)
    (2.0, -0.484, 4.484)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Estimate", "t_quantile", "t_cdf", "mean_interval", "paired_difference", "welch_difference"]

CONFIDENCE = 0.95


@dataclass(frozen=True)
class Estimate:
    """A mean (or a difference of means) with its spread and confidence interval.

    ``sd`` is the sample standard deviation (of the values, or of the paired differences); ``low`` and
    ``high`` bound the ``CONFIDENCE`` interval; all three are None with fewer than two values.
    """

    n: int
    mean: float
    sd: float | None = None
    low: float | None = None
    high: float | None = None
    df: float | None = None

    @property
    def half_width(self) -> float | None:
        return None if self.low is None or self.high is None else (self.high - self.low) / 2

    def includes(self, value: float = 0.0) -> bool | None:
        """Whether the interval holds ``value`` (None without an interval)."""
        if self.low is None or self.high is None:
            return None
        return self.low <= value <= self.high


def _betacf(a: float, b: float, x: float) -> float:
    """The continued fraction of the incomplete beta function (modified Lentz's method)."""
    tiny, eps = 1e-300, 1e-15
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 10_000):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        step = d * c
        h *= step
        if abs(step - 1.0) < eps:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` degrees of freedom (any positive real df)."""
    if df <= 0:
        raise ValueError(f"degrees of freedom must be positive, got {df}")
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (bisection on ``t_cdf``).

    Example:
        >>> round(t_quantile(0.975, 1), 3), round(t_quantile(0.975, 1e9), 3)
        (12.706, 1.96)
    """
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must lie strictly between 0 and 1, got {p}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    low, high = 0.0, 1.0
    while t_cdf(high, df) < p:
        high *= 2.0
    for _ in range(200):
        middle = (low + high) / 2.0
        if t_cdf(middle, df) < p:
            low = middle
        else:
            high = middle
        if high - low < 1e-12 * max(1.0, high):
            break
    return (low + high) / 2.0


def _sd(values: Sequence[float], mean: float) -> float:
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def mean_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> Estimate:
    """Mean, sample sd and the t interval of the mean of ``values`` (seeds of one cell).

    Example:
        >>> mean_interval([4.0]).low is None  # one seed: a mean, no spread
        True
    """
    values = [float(v) for v in values]
    if not values:
        raise ValueError("no values to summarise")
    n = len(values)
    mean = math.fsum(values) / n
    if n < 2:
        return Estimate(n=n, mean=mean)
    sd = _sd(values, mean)
    half = t_quantile(0.5 + confidence / 2.0, n - 1) * sd / math.sqrt(n)
    return Estimate(n=n, mean=mean, sd=sd, low=mean - half, high=mean + half, df=n - 1)


def paired_difference(level: Sequence[float], base: Sequence[float], confidence: float = CONFIDENCE
                      ) -> Estimate:
    """The mean of ``level[i] - base[i]`` over pairs (the same seed: the same starting noise), t interval.

    Example:
        >>> d = paired_difference([5.0, 6.0, 8.0], [4.0, 5.0, 6.0])
        >>> d.mean, round(d.sd, 3), d.n
        (1.3333333333333333, 0.577, 3)
    """
    if len(level) != len(base):
        raise ValueError(f"paired values must come in pairs, got {len(level)} and {len(base)}")
    return mean_interval([a - b for a, b in zip(level, base, strict=True)], confidence)


def welch_difference(level: Sequence[float], base: Sequence[float], confidence: float = CONFIDENCE
                     ) -> Estimate:
    """``mean(level) - mean(base)`` for independent samples (seedless replicates), Welch's t interval.

    ``sd`` is the standard error of the difference here. Without two values on each side there is no interval.
    """
    a, b = mean_interval(level, confidence), mean_interval(base, confidence)
    diff = a.mean - b.mean
    if a.sd is None or b.sd is None:
        return Estimate(n=a.n + b.n, mean=diff)
    va, vb = a.sd ** 2 / a.n, b.sd ** 2 / b.n
    se = math.sqrt(va + vb)
    if se == 0.0:  # no spread on either side: the difference is exact
        return Estimate(n=a.n + b.n, mean=diff, sd=0.0, low=diff, high=diff, df=float(a.n + b.n - 2))
    df = (va + vb) ** 2 / (va ** 2 / (a.n - 1) + vb ** 2 / (b.n - 1))  # Welch–Satterthwaite
    half = t_quantile(0.5 + confidence / 2.0, df) * se
    return Estimate(n=a.n + b.n, mean=diff, sd=se, low=diff - half, high=diff + half, df=df)
