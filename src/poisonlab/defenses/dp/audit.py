"""Empirical privacy auditing: lower bounds on epsilon from a membership test on canaries.

Two estimators, both statistically valid lower bounds at a stated confidence when their assumptions hold:

* **Hypothesis-testing bound** (Kairouz, Oh & Viswanath 2015; Jagielski, Ullman & Oprea, NeurIPS 2020,
  arXiv 2006.07709; tf-privacy ``privacy_tests/epsilon_lower_bound.py`` with ``BoundMethod.CLOPPER_PEARSON``):
  any test that tells "trained with the canary" from "trained without" satisfies TPR <= e^eps FPR + delta under
  (eps, delta)-DP, so ``eps >= log((TPR_lo - delta) / FPR_hi)`` with Clopper-Pearson bounds, TPR_lo the lower
  end and FPR_hi the upper end of two-sided (1 - alpha) intervals (alpha / 2 in each used tail: total alpha).
  It needs independent trials (one model per trial); applied to many canaries of *one* model it is the
  heuristic tf-privacy uses, and is reported as such.
* **One-run audit** (Steinke, Nasr & Jagielski, "Privacy Auditing with One (1) Training Run", NeurIPS 2023,
  arXiv 2305.08846): m canaries, each included independently with probability 1/2, one training run; the
  auditor guesses "in" for the k+ highest scores and "out" for the k- lowest and abstains on the rest. Under
  (eps, delta)-DP the number of correct guesses V among r guesses satisfies
  ``P[V >= v] <= P[Binomial(r, e^eps / (1 + e^eps)) >= v] + 2 m delta * max_i P[v > Binomial >= v - i] / i``
  (their Theorem 5.2 and the appendix code); the bound is the largest eps whose p-value is below beta.

Threat model: the auditor chooses the canaries and their random inclusion, sees only the final model (black
box: per-canary losses) and never the noise; the bounds say nothing about examples other than canaries.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from poisonlab.errors import ConfigError

__all__ = [
    "OneRunAudit",
    "clopper_pearson",
    "guess_grid",
    "one_run_audit",
    "one_run_epsilon_lower_bound",
    "one_run_p_value",
    "ratio_epsilon_lower_bound",
    "threshold_epsilon_lower_bound",
]


def _check_alpha(alpha: float, field: str = "alpha") -> float:
    if not (isinstance(alpha, (int, float)) and 0 < alpha < 1):
        raise ConfigError(f"{field}: expected 0 < {field} < 1, got {alpha!r}")
    return float(alpha)


def _check_delta(delta: float) -> float:
    if not (isinstance(delta, (int, float)) and 0 <= delta < 1):
        raise ConfigError(f"delta: expected 0 <= delta < 1, got {delta!r}")
    return float(delta)


def clopper_pearson(k: int | np.ndarray, n: int, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided exact (Clopper-Pearson 1934) (1 - alpha) interval for k successes of n: alpha / 2 per tail.

    ``lo = Beta(alpha/2; k, n - k + 1)`` (0 when k = 0), ``hi = Beta(1 - alpha/2; k + 1, n - k)`` (1 when k = n);
    the same as statsmodels' ``proportion_confint(k, n, alpha, method="beta")``.
    """
    alpha = _check_alpha(alpha)
    k = np.asarray(k, dtype=float)
    if n < 1 or np.any(k < 0) or np.any(k > n):
        raise ConfigError(f"clopper_pearson: need 0 <= k <= n and n >= 1, got k={k!r}, n={n!r}")
    with np.errstate(invalid="ignore", divide="ignore"):
        lo = np.where(k > 0, stats.beta.ppf(alpha / 2, k, n - k + 1), 0.0)
        hi = np.where(k < n, stats.beta.ppf(1 - alpha / 2, k + 1, n - k), 1.0)
    return lo, hi


def ratio_epsilon_lower_bound(
    tp: int | np.ndarray, fp: int | np.ndarray, positives: int, negatives: int, alpha: float, delta: float = 0.0
) -> np.ndarray:
    """``log((TPR_lo - delta) / FPR_hi)`` with Clopper-Pearson bounds (0 where that is not positive).

    Args:
        tp: true positives (test said "in" for a member), scalar or array over thresholds.
        fp: false positives (said "in" for a non-member), same shape.
        positives: number of members; negatives: number of non-members.
        alpha: total error probability (alpha / 2 for TPR_lo, alpha / 2 for FPR_hi).
        delta: the delta of the (eps, delta) hypothesis.
    """
    delta = _check_delta(delta)
    tpr_lo, _ = clopper_pearson(tp, positives, alpha)
    _, fpr_hi = clopper_pearson(fp, negatives, alpha)
    with np.errstate(divide="ignore", invalid="ignore"):
        eps = np.log((tpr_lo - delta) / fpr_hi)
    return np.where(np.isfinite(eps) & (tpr_lo - delta > 0), np.maximum(eps, 0.0), 0.0)


def threshold_epsilon_lower_bound(
    in_scores: Sequence[float] | np.ndarray,
    out_scores: Sequence[float] | np.ndarray,
    alpha: float = 0.05,
    delta: float = 0.0,
) -> dict[str, float]:
    """tf-privacy's Clopper-Pearson bound (``two_sided_threshold=True``): the largest
    :func:`ratio_epsilon_lower_bound` over every threshold t of the test "score >= t means member" and the four
    ratios tpr/fpr, tnr/fnr and, for members that score lower, fpr/tpr and fnr/tnr.

    Note: maximising over thresholds on the same scores makes the stated confidence optimistic, and scores of
    one model are not independent trials; use :func:`one_run_audit` for a rigorous single-run bound.

    Returns:
        {"epsilon_lb", "threshold", "direction", "tp", "fp" (of "score >= threshold"), "positives",
        "negatives"}.
    """
    pos = np.sort(np.asarray(in_scores, dtype=float))
    neg = np.sort(np.asarray(out_scores, dtype=float))
    if pos.size == 0 or neg.size == 0:
        raise ConfigError("scores: need at least one member and one non-member score")
    thresholds = np.unique(np.concatenate([pos, neg]))
    tp = pos.size - np.searchsorted(pos, thresholds, side="left")  # members with score >= t
    fp = neg.size - np.searchsorted(neg, thresholds, side="left")
    tn, fn = neg.size - fp, pos.size - tp
    candidates = {  # (name, numerator count, denominator count, numerator size, denominator size)
        "tpr/fpr": (tp, fp, pos.size, neg.size),
        "tnr/fnr": (tn, fn, neg.size, pos.size),
        "fpr/tpr": (fp, tp, neg.size, pos.size),  # two-sided: members score lower
        "fnr/tnr": (fn, tn, pos.size, neg.size),
    }
    best: dict[str, Any] = {"epsilon_lb": -1.0, "positives": int(pos.size), "negatives": int(neg.size)}
    for name, (num, den, n_num, n_den) in candidates.items():
        eps = ratio_epsilon_lower_bound(num, den, n_num, n_den, alpha, delta)
        i = int(np.argmax(eps))
        if eps[i] > best["epsilon_lb"]:
            best.update(epsilon_lb=float(eps[i]), threshold=float(thresholds[i]), direction=name)
            best.update(tp=int(tp[i]), fp=int(fp[i]))
    return best


def one_run_p_value(m: int, r: int, v: int, epsilon: float, delta: float = 0.0) -> float:
    """Steinke et al.'s p-value: an upper bound on P[>= v correct of r guesses] under (epsilon, delta)-DP.

    ``beta = P[Binomial(r, q) >= v]`` with ``q = e^eps / (1 + e^eps)``, plus ``2 m delta alpha`` where
    ``alpha = max_{1 <= i <= v} P[v - i <= Binomial(r, q) < v] / i``; clipped to 1.
    """
    if not (0 <= v <= r <= m):
        raise ConfigError(f"one-run audit: need 0 <= v <= r <= m, got v={v}, r={r}, m={m}")
    if not epsilon >= 0:
        raise ConfigError(f"epsilon: expected >= 0, got {epsilon!r}")
    delta = _check_delta(delta)
    q = 1.0 / (1.0 + math.exp(-epsilon))
    beta = float(stats.binom.sf(v - 1, r, q))
    alpha = 0.0
    if delta > 0 and v > 0:
        pmf = stats.binom.pmf(np.arange(v - 1, -1, -1), r, q)  # P[B = v - i] for i = 1..v
        alpha = float(np.max(np.cumsum(pmf) / np.arange(1, v + 1)))
    return min(beta + alpha * delta * 2 * m, 1.0)


def one_run_epsilon_lower_bound(m: int, r: int, v: int, delta: float = 0.0, beta: float = 0.05) -> float:
    """The largest epsilon (bisection, 40 halvings of a doubling bracket) with ``one_run_p_value(...) < beta``;
    0 when even epsilon = 0 is not rejected.

    The p-value grows with epsilon (a less private null hypothesis explains more correct guesses), so the
    rejected epsilons form an interval [0, eps*) and eps* is the lower bound at confidence 1 - beta.
    """
    beta = _check_alpha(beta, "beta")
    if one_run_p_value(m, r, v, 0.0, delta) >= beta:
        return 0.0
    lo, hi = 0.0, 1.0
    while one_run_p_value(m, r, v, hi, delta) < beta:
        lo, hi = hi, hi * 2
        if hi > 1e4:
            raise RuntimeError("one-run audit: the p-value did not reach beta below epsilon 1e4")
    for _ in range(40):
        mid = (lo + hi) / 2
        if one_run_p_value(m, r, v, mid, delta) < beta:
            lo = mid
        else:
            hi = mid
    return lo


def guess_grid(m: int) -> list[tuple[int, int]]:
    """The (k+, k-) guess counts tried by :func:`one_run_audit`: k+ = k- = k for k in about 1%, 2%, 5%, 10%,
    20%, 50% of m/2... capped at m/2, and k+ alone (positives only) for the same k; duplicates removed."""
    ks = sorted({max(1, min(m // 2, round(f * m))) for f in (0.01, 0.02, 0.05, 0.1, 0.2, 0.5)})
    return [(k, k) for k in ks] + [(k, 0) for k in ks]


@dataclass(frozen=True)
class OneRunAudit:
    """Result of :func:`one_run_audit` (the best guess counts after the Bonferroni split of beta)."""

    epsilon_lb: float
    k_pos: int
    k_neg: int
    guesses: int
    correct: int
    canaries: int
    included: int
    beta: float
    beta_per_test: float
    tried: int

    def as_dict(self) -> dict[str, float | int]:
        return dict(self.__dict__)


def one_run_audit(
    scores: Sequence[float] | np.ndarray,
    included: Sequence[bool] | np.ndarray,
    delta: float = 0.0,
    beta: float = 0.05,
    grid: Sequence[tuple[int, int]] | None = None,
) -> OneRunAudit:
    """The one-run audit of a trained model from per-canary membership scores (higher = more likely included).

    For each (k+, k-) in ``grid`` (default :func:`guess_grid`), guess "in" for the k+ highest scores and "out"
    for the k- lowest, count the correct guesses v of r = k+ + k-, and compute
    :func:`one_run_epsilon_lower_bound` at ``beta / len(grid)`` (Bonferroni: the best of the grid is still a
    (1 - beta)-confidence bound; Steinke et al. pick k+, k- in advance). Ties are broken by canary position.

    Args:
        scores: (m,) per-canary scores, e.g. the negative loss on the canary's label.
        included: (m,) whether each canary was in the training set (the audit's secret coin flips).
        delta: the delta of the audited (epsilon, delta).
        beta: 1 - confidence.
        grid: (k+, k-) pairs with k+ + k- <= m.
    """
    s = np.asarray(scores, dtype=float)
    inc = np.asarray(included, dtype=bool)
    if s.ndim != 1 or s.shape != inc.shape or s.size < 2:
        raise ConfigError(f"scores/included: expected two 1-d arrays of the same length >= 2, got {s.shape}")
    if not np.all(np.isfinite(s)):
        raise ConfigError("scores: every canary score must be finite")
    m = s.size
    grid = list(grid) if grid is not None else guess_grid(m)
    if not grid or any(kp < 0 or kn < 0 or kp + kn < 1 or kp + kn > m for kp, kn in grid):
        raise ConfigError(f"grid: each (k+, k-) needs 1 <= k+ + k- <= m = {m}")
    order = np.argsort(-s, kind="stable")  # highest score first
    ranked = inc[order]
    each = _check_alpha(beta, "beta") / len(grid)
    best: OneRunAudit | None = None
    for kp, kn in grid:
        v = int(ranked[:kp].sum()) + int((~ranked[m - kn :]).sum() if kn else 0)
        eps = one_run_epsilon_lower_bound(m, kp + kn, v, delta, each)
        if best is None or eps > best.epsilon_lb:
            best = OneRunAudit(eps, kp, kn, kp + kn, v, m, int(inc.sum()), beta, each, len(grid))
    assert best is not None
    return best
