"""Aggregation rules against hand-computed values, the norm-clipping bound, DP noise scale and the registry."""

from __future__ import annotations

import math

import pytest
import torch

from poisonlab.defenses.aggregation import (
    AGGREGATORS,
    AggregatorSettings,
    CoordinateMedian,
    DPFedAvg,
    FedAvg,
    Krum,
    NormClipping,
    NormDetector,
    TrimmedMean,
    build_aggregator,
    krum_scores,
)
from poisonlab.errors import ConfigError
from poisonlab.fl.messages import ClientUpdate

G = torch.Generator().manual_seed(0)


def ups(rows: list[list[float]], examples: list[int] | None = None) -> list[ClientUpdate]:
    examples = examples or [1] * len(rows)
    return [ClientUpdate(i, torch.tensor(r, dtype=torch.float64), n) for i, (r, n) in enumerate(zip(rows, examples))]


def test_fedavg_uniform_and_example_weighted() -> None:
    u = ups([[1.0, 2.0], [3.0, 6.0]], [1, 3])
    assert torch.equal(FedAvg().aggregate(u, G).delta, torch.tensor([2.0, 4.0], dtype=torch.float64))
    # weighted: (1*[1,2] + 3*[3,6]) / 4 = [2.5, 5]
    assert torch.equal(FedAvg("examples").aggregate(u, G).delta, torch.tensor([2.5, 5.0], dtype=torch.float64))


def test_coordinate_median_odd_and_even() -> None:
    odd = CoordinateMedian().aggregate(ups([[1, 5], [3, 2], [2, 9]]), G).delta
    assert odd.tolist() == [2.0, 5.0]
    even = CoordinateMedian().aggregate(ups([[1, -1], [4, 0], [2, 7], [10, 3]]), G).delta
    assert even.tolist() == [3.0, 1.5]  # means of the two middle values, not torch.median's lower one


def test_trimmed_mean_drops_both_ends() -> None:
    rows = [[1, 50], [2, -4], [3, 0], [4, 1], [100, 2]]
    out = TrimmedMean(0.2).aggregate(ups(rows), G).delta  # floor(0.2 * 5) = 1 from each end
    assert out.tolist() == [3.0, 1.0]  # mean(2, 3, 4); mean(0, 1, 2)
    assert TrimmedMean(0.0).aggregate(ups(rows), G).delta.tolist() == [22.0, 9.8]
    with pytest.raises(ConfigError, match="aggregator.trim"):
        TrimmedMean(0.5)


def test_krum_scores_and_selection_on_a_known_set() -> None:
    rows = [[0.0], [1.0], [2.0], [3.0], [100.0]]
    scores = krum_scores(torch.tensor(rows, dtype=torch.float64), byzantine=1)  # 5 - 1 - 2 = 2 neighbours
    assert scores.tolist() == [5.0, 2.0, 2.0, 5.0, 97.0**2 + 98.0**2]
    krum = Krum(1, 1).aggregate(ups(rows), G)
    assert krum.accepted == (1,) and krum.delta.tolist() == [1.0]  # tie 1 vs 2: the earlier update
    multi = Krum(1, 3).aggregate(ups(rows), G)
    assert multi.accepted == (1, 2, 0) and multi.delta.tolist() == [1.0]
    default = Krum(1, None).aggregate(ups(rows), G)  # m = K - f = 4: the outlier is the one left out
    assert sorted(default.accepted) == [0, 1, 2, 3]
    with pytest.raises(ConfigError, match="byzantine"):
        Krum(2, 1).aggregate(ups(rows), G)  # needs K > 2f + 2 = 6


def test_norm_clipping_bounds_every_update_and_keeps_small_ones() -> None:
    g = torch.Generator().manual_seed(1)
    deltas = torch.randn(8, 50, generator=g) * torch.tensor([0.1, 0.5, 1, 2, 5, 10, 0.01, 3])[:, None]
    updates = [ClientUpdate(i, d, 1) for i, d in enumerate(deltas)]
    bound = 2.0
    from poisonlab.defenses.aggregation import clip_to_norm

    clipped = clip_to_norm(deltas, bound)
    norms = clipped.double().norm(dim=1)
    assert bool((norms <= bound * (1 + 1e-6)).all())
    small = deltas.double().norm(dim=1) <= bound
    assert torch.equal(clipped[small], deltas[small])
    big = ~small
    assert torch.allclose(norms[big], torch.full_like(norms[big], bound))
    out = NormClipping(bound).aggregate(updates, g)
    assert torch.allclose(out.delta, clipped.mean(0))
    assert out.info["clipped"] == [i for i in range(8) if bool(big[i])]
    assert float(out.delta.norm()) <= bound * (1 + 1e-6)


def test_dp_fedavg_noise_scale_and_accounting() -> None:
    d, n, z, s = 20_000, 10, 0.5, 2.0
    zero = [ClientUpdate(i, torch.zeros(d), 1) for i in range(n)]
    agg = DPFedAvg(s, z, expected_participants=n)
    out = agg.aggregate(zero, torch.Generator().manual_seed(3)).delta
    expected = z * s / n
    assert abs(float(out.std()) / expected - 1) < 0.03  # 20k samples: relative sd of the std is ~0.5%
    again = agg.aggregate(zero, torch.Generator().manual_seed(4)).delta
    assert not torch.equal(out, again)
    assert agg.epsilon(1e-5) is None  # fixed-size sampling: no Poisson accounting
    poisson = DPFedAvg(s, z, expected_participants=10.0, sample_rate=0.1)
    for r in range(3):
        poisson.aggregate(zero, torch.Generator().manual_seed(r))
    from poisonlab.defenses.dp.events import PoissonSampledGaussian

    # one user-level Poisson-sampled Gaussian mechanism per round (epsilon itself: tests of defenses.dp)
    assert poisson.ledger is not None and poisson.ledger.events == (PoissonSampledGaussian(0.1, z, 3),)
    fresh = DPFedAvg(s, z, expected_participants=10.0, sample_rate=0.1)
    fresh.load_state_dict(poisson.state_dict())
    assert fresh.ledger is not None and fresh.ledger.events == poisson.ledger.events


def test_dp_clips_before_noise() -> None:
    big = [ClientUpdate(0, torch.full((4,), 100.0), 1)]
    out = DPFedAvg(1.0, 0.0, expected_participants=1).aggregate(big, G).delta
    assert math.isclose(float(out.norm()), 1.0, rel_tol=1e-6)


def test_norm_detector_drops_far_updates() -> None:
    rows = [[3.0, 4.0], [0.6, 0.8], [0.0, 1.0]]  # norms 5, 1, 1
    out = NormDetector(2.0).aggregate(ups(rows), G)
    assert out.info["flagged"] == [0] and out.accepted == (1, 2)
    assert out.delta.tolist() == pytest.approx([0.3, 0.9])
    none = NormDetector(0.5).aggregate(ups(rows), G)
    assert none.accepted == () and none.delta.tolist() == [0.0, 0.0]


def test_registry_builds_every_rule_and_names_errors() -> None:
    settings = AggregatorSettings(per_round=5, norm_bound=1.0)
    rows = ups([[float(i), 1.0] for i in range(5)])
    for name in AGGREGATORS.names():
        out = build_aggregator(name, settings).aggregate(rows, torch.Generator().manual_seed(0))
        assert out.delta.shape == (2,) and torch.isfinite(out.delta).all()
    assert set(AGGREGATORS.names()) >= {"fedavg", "clip", "dp", "median", "trimmed-mean", "krum", "multi-krum"}
    with pytest.raises(ConfigError, match="aggregator.name"):
        build_aggregator("mean-of-best", settings)
    with pytest.raises(ConfigError, match="norm_bound"):
        build_aggregator("clip", AggregatorSettings(per_round=5))
