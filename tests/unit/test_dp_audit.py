"""Empirical privacy audit (RELIABILITY.md B.2 item 12, B.4 item 10): the Clopper-Pearson and one-run lower
bounds against hand-computed values, their monotonicity, canary construction, and tiny end-to-end audits (a
non-private mechanism exceeds a small epsilon; DP-SGD stays below its accountant; determinism)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from poisonlab.data.dataset import Dataset
from poisonlab.defenses.dp.audit import (
    clopper_pearson,
    guess_grid,
    one_run_audit,
    one_run_epsilon_lower_bound,
    one_run_p_value,
    ratio_epsilon_lower_bound,
    threshold_epsilon_lower_bound,
)
from poisonlab.defenses.dp.canaries import insert_canaries, make_canaries
from poisonlab.errors import ConfigError


def _logit(q: float) -> float:
    return math.log(q / (1 - q))


# ---------------------------------------------------------------- Clopper-Pearson and the ratio bound
def test_clopper_pearson_closed_forms_at_the_ends() -> None:
    n, alpha = 100, 0.05
    lo, hi = clopper_pearson(n, n, alpha)  # all successes: lo = (alpha/2)^(1/n), hi = 1
    assert float(lo) == pytest.approx((alpha / 2) ** (1 / n), rel=1e-12) and float(hi) == 1.0
    lo, hi = clopper_pearson(0, n, alpha)  # none: lo = 0, hi = 1 - (alpha/2)^(1/n)
    assert float(lo) == 0.0 and float(hi) == pytest.approx(1 - (alpha / 2) ** (1 / n), rel=1e-12)


def test_clopper_pearson_interior_is_the_beta_quantile_and_covers_the_estimate() -> None:
    lo, hi = clopper_pearson(np.array([3, 50]), 100, 0.1)
    assert lo[0] == pytest.approx(stats.beta.ppf(0.05, 3, 98)) and hi[0] == pytest.approx(stats.beta.ppf(0.95, 4, 97))
    assert lo[1] < 0.5 < hi[1] and lo[1] == pytest.approx(1 - hi[1])  # symmetric at k = n/2
    with pytest.raises(ConfigError, match="alpha"):
        clopper_pearson(1, 10, 1.5)
    with pytest.raises(ConfigError, match="0 <= k <= n"):
        clopper_pearson(11, 10, 0.05)


def test_ratio_bound_hand_computed() -> None:
    n, alpha = 100, 0.05
    t = (alpha / 2) ** (1 / n)  # TPR_lo for tp = n, and 1 - FPR_hi for fp = 0
    assert float(ratio_epsilon_lower_bound(n, 0, n, n, alpha)) == pytest.approx(math.log(t / (1 - t)), rel=1e-9)
    assert float(ratio_epsilon_lower_bound(n, 0, n, n, alpha)) == pytest.approx(3.2813463, abs=1e-6)
    delta = 0.01
    assert float(ratio_epsilon_lower_bound(n, 0, n, n, alpha, delta)) == pytest.approx(
        math.log((t - delta) / (1 - t)), rel=1e-9
    )
    # tp = 50, fp = 10 of 100 each: log(Beta(.025; 50, 51) / Beta(.975; 11, 90))
    want = math.log(stats.beta.ppf(0.025, 50, 51) / stats.beta.ppf(0.975, 11, 90))
    assert float(ratio_epsilon_lower_bound(50, 10, 100, 100, alpha)) == pytest.approx(want, rel=1e-9)
    assert float(ratio_epsilon_lower_bound(10, 10, 100, 100, alpha)) == 0.0  # no evidence: clipped at 0


def test_threshold_bound_perfect_separation_and_no_signal() -> None:
    n = 100
    ins, outs = np.arange(n) + 1000.0, np.arange(n) * 1.0
    best = threshold_epsilon_lower_bound(ins, outs, 0.05)
    assert best["epsilon_lb"] == pytest.approx(float(ratio_epsilon_lower_bound(n, 0, n, n, 0.05)))
    assert (best["tp"], best["fp"]) == (n, 0)
    backwards = threshold_epsilon_lower_bound(outs, ins, 0.05)  # members score lower: the complement test
    assert backwards["epsilon_lb"] == pytest.approx(best["epsilon_lb"]) and backwards["direction"] == "fpr/tpr"
    g = np.random.default_rng(0)
    same = threshold_epsilon_lower_bound(g.normal(size=500), g.normal(size=500), 0.05)
    assert same["epsilon_lb"] < 0.5


# ---------------------------------------------------------------- the one-run bound
def test_one_run_p_value_hand_computed() -> None:
    eps, r, m = 1.0, 2, 10
    q = 1 / (1 + math.exp(-eps))
    assert one_run_p_value(m, r, 2, eps) == pytest.approx(q**2, rel=1e-12)
    assert one_run_p_value(m, r, 1, eps) == pytest.approx(1 - (1 - q) ** 2, rel=1e-12)
    # delta term: alpha = max(P[B=1] / 1, (P[B=1] + P[B=0]) / 2) for v = 2
    delta = 1e-3
    p1, p0 = 2 * q * (1 - q), (1 - q) ** 2
    alpha = max(p1, (p1 + p0) / 2)
    assert one_run_p_value(m, r, 2, eps, delta) == pytest.approx(q**2 + 2 * m * delta * alpha, rel=1e-12)
    assert one_run_p_value(m, r, 0, eps) == 1.0


def test_one_run_bound_closed_form_when_every_guess_is_right() -> None:
    # P[Binomial(r, q) >= r] = q^r < beta  <=>  q < beta^(1/r): the bound is logit(beta^(1/r))
    for r, beta in ((100, 0.05), (20, 0.01), (500, 0.05 / 12)):
        want = _logit(beta ** (1 / r))
        assert one_run_epsilon_lower_bound(10 * r, r, r, 0.0, beta) == pytest.approx(want, abs=1e-9)
    assert one_run_epsilon_lower_bound(1000, 100, 100, 0.0, 0.05) == pytest.approx(3.4929654, abs=1e-6)


def test_one_run_bound_monotone_and_zero_at_chance() -> None:
    m, r = 1000, 200
    bounds = [one_run_epsilon_lower_bound(m, r, v, 1e-5, 0.05) for v in (100, 120, 140, 160, 180, 200)]
    assert bounds[0] == 0.0  # half right: no evidence against eps = 0
    assert all(a < b for a, b in zip(bounds, bounds[1:]))
    with_delta = one_run_epsilon_lower_bound(m, r, 180, 1e-3, 0.05)
    assert with_delta < one_run_epsilon_lower_bound(m, r, 180, 0.0, 0.05)  # delta makes the bound weaker


def test_one_run_audit_perfect_and_random_scores() -> None:
    m = 400
    g = np.random.default_rng(1)
    inc = g.random(m) < 0.5
    scores = np.where(inc, 1.0, -1.0) + 0.01 * g.random(m)  # perfectly separated
    res = one_run_audit(scores, inc, 0.0, 0.05)
    grid = guess_grid(m)
    assert res.tried == len(grid) and res.beta_per_test == pytest.approx(0.05 / len(grid))
    best_r = max(kp + kn for kp, kn in grid if kp <= inc.sum() and kn <= (~inc).sum())
    assert res.correct == res.guesses  # every guess right
    assert res.epsilon_lb >= one_run_epsilon_lower_bound(m, best_r, best_r, 0.0, 0.05 / len(grid)) - 1e-9
    random = one_run_audit(g.normal(size=m), inc, 0.0, 0.05)
    assert random.epsilon_lb < 0.5
    with pytest.raises(ConfigError, match="finite"):
        one_run_audit(np.array([0.0, np.nan]), np.array([True, False]))


# ---------------------------------------------------------------- canaries
def _source(n: int = 50, k: int = 5) -> Dataset:
    g = torch.Generator().manual_seed(0)
    return Dataset(
        "src",
        torch.rand(n, 1, 4, 4, generator=g),
        torch.arange(n) % k,
        torch.arange(n) + 100,
        tuple(str(i) for i in range(k)),
    )


def test_mislabeled_canaries_have_wrong_labels_and_insertion_leaves_the_base() -> None:
    src, base = _source(), _source(20)
    before = base.images.clone(), base.labels.clone()
    c = make_canaries(src, 30, "mislabeled", torch.Generator().manual_seed(3))
    assert len(c) == 30 and c.images.shape == (30, 1, 4, 4)
    origin = [int((src.images == img).all(dim=(1, 2, 3)).nonzero()) for img in c.images]
    assert len(set(origin)) == 30  # distinct source images
    assert all(int(c.labels[i]) != int(src.labels[j]) for i, j in enumerate(origin))
    train = insert_canaries(base, c).materialize()
    assert len(train) == len(base) + int(c.included.sum())
    assert torch.equal(train.images[len(base) :], c.images[c.included])
    assert torch.equal(base.images, before[0]) and torch.equal(base.labels, before[1])
    again = make_canaries(src, 30, "mislabeled", torch.Generator().manual_seed(3))
    assert torch.equal(again.labels, c.labels) and torch.equal(again.included, c.included)
    with pytest.raises(ConfigError, match="held-out"):
        make_canaries(src, 51, "mislabeled", torch.Generator())
    with pytest.raises(ConfigError, match="canary_kind"):
        make_canaries(src, 5, "typo", torch.Generator())
