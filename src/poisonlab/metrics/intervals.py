"""Confidence intervals: Wilson score interval for a proportion, Student-t interval for a mean over seeds."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from statistics import NormalDist


def _check_confidence(confidence: float) -> None:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence: expected 0 < confidence < 1, got {confidence}")


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for ``successes`` out of ``n`` trials (Wilson 1927; Brown, Cai & DasGupta 2001).

    Unlike the normal ("Wald") interval it stays inside [0, 1] and is not degenerate at 0 or n successes.
    ``n = 0`` gives (0, 1).
    """
    _check_confidence(confidence)
    if n < 0 or not 0 <= successes <= n:
        raise ValueError(f"wilson_interval: need 0 <= successes <= n, got {successes} of {n}")
    if n == 0:
        return 0.0, 1.0
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    lo, hi = max(0.0, centre - half), min(1.0, centre + half)
    if successes == 0:
        lo = 0.0
    if successes == n:
        hi = 1.0
    return lo, hi


def t_quantile(q: float, df: int) -> float:
    """Quantile of Student's t distribution with ``df`` degrees of freedom."""
    from scipy.stats import t

    return float(t.ppf(q, df))


def t_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """(mean, lower, upper): the Student-t interval ``mean +- t_{df} * s / sqrt(n)`` with ``df = n - 1``.

    With one value the interval is undefined and both bounds are NaN.
    """
    _check_confidence(confidence)
    xs = [float(v) for v in values]
    n = len(xs)
    if n == 0:
        raise ValueError("t_interval: no values")
    mean = math.fsum(xs) / n
    if n == 1:
        return mean, math.nan, math.nan
    sd = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (n - 1))
    half = t_quantile(0.5 + confidence / 2, n - 1) * sd / math.sqrt(n)
    return mean, mean - half, mean + half


@dataclass(frozen=True)
class Proportion:
    """``successes`` out of ``n`` with its rate and Wilson interval."""

    successes: int
    n: int

    @property
    def rate(self) -> float:
        return self.successes / self.n if self.n else math.nan

    def interval(self, confidence: float = 0.95) -> tuple[float, float]:
        return wilson_interval(self.successes, self.n, confidence)

    def __add__(self, other: Proportion) -> Proportion:
        return Proportion(self.successes + other.successes, self.n + other.n)

    def as_dict(self) -> dict[str, float]:
        lo, hi = self.interval()
        return {"rate": self.rate, "successes": self.successes, "n": self.n, "lo": lo, "hi": hi}


def interval_text(d: Mapping[str, float] | None, scale: float = 1.0, digits: int = 2) -> str:
    """A mean with its interval as ``mean [lo, hi]`` (times ``scale``); the mean alone where the interval is
    undefined (NaN, one seed); ``-`` for none."""
    if not d:
        return "-"
    lo, hi = d["lo"], d["hi"]
    if math.isnan(lo):
        return f"{d['mean'] * scale:.{digits}f}"
    return f"{d['mean'] * scale:.{digits}f} [{lo * scale:.{digits}f}, {hi * scale:.{digits}f}]"
