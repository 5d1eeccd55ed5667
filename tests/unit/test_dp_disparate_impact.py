"""Disparate impact of DP-SGD (ALGORITHMS.md section 12): the under-represented training set is exact and never
mutates its base, per-class / group accuracy and the clipping statistics against hand-computed values, the
paired summary, and a tiny end-to-end run (store rows with epsilon, JSON, PNG, resume, determinism)."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from poisonlab.data.dataset import Dataset
from poisonlab.defenses.dp.disparate_impact import (
    ClipStatistics,
    group_accuracy,
    kept_count,
    per_class_accuracy,
    summarize_impact,
    underrepresent,
)
from poisonlab.errors import ConfigError
from poisonlab.training.hooks import Batch


def _data(per_class: tuple[int, ...] = (40, 37, 50), seed: int = 0) -> Dataset:
    g = torch.Generator().manual_seed(seed)
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(per_class)])
    labels = labels[torch.randperm(len(labels), generator=g)]
    n = len(labels)
    return Dataset(
        "toy",
        torch.rand(n, 1, 3, 3, generator=g),
        labels,
        torch.arange(n) * 7 + 3,
        tuple(str(c) for c in range(len(per_class))),
    )


@pytest.mark.parametrize("fraction, kept", [(0.1, 4), (0.25, 9), (1 / 37, 1), (1.0, 37), (0.5, 18)])
def test_underrepresent_counts_are_exact(fraction: float, kept: int) -> None:
    data = _data()
    out = underrepresent(data, 1, fraction, torch.Generator().manual_seed(1))
    counts = torch.bincount(out.labels, minlength=3).tolist()
    assert counts == [40, kept, 50] and kept == round(fraction * 37)
    assert len(out) == 90 + kept


def test_underrepresent_keeps_ids_order_and_never_mutates_the_base() -> None:
    data = _data()
    images, labels, ids = data.images.clone(), data.labels.clone(), data.ids.clone()
    out = underrepresent(data, 2, 0.1, torch.Generator().manual_seed(5))
    assert torch.equal(data.images, images) and torch.equal(data.labels, labels) and torch.equal(data.ids, ids)
    assert out.images.data_ptr() != data.images.data_ptr()
    out.images.zero_()  # writing to the result must not reach the base
    assert torch.equal(data.images, images)
    pos = data.positions_of(out.ids)
    assert bool((pos[1:] > pos[:-1]).all())  # original order, unique rows
    assert torch.equal(data.labels[pos], out.labels)
    assert bool((data.labels[(data.labels != 2).nonzero().squeeze(1)] != 2).all())


def test_underrepresent_is_deterministic_and_seed_dependent() -> None:
    data = _data()
    a = underrepresent(data, 0, 0.2, torch.Generator().manual_seed(3))
    b = underrepresent(data, 0, 0.2, torch.Generator().manual_seed(3))
    c = underrepresent(data, 0, 0.2, torch.Generator().manual_seed(4))
    assert torch.equal(a.ids, b.ids) and torch.equal(a.images, b.images)
    assert not torch.equal(a.ids, c.ids)
    state = torch.random.get_rng_state()
    underrepresent(data, 0, 0.2, torch.Generator().manual_seed(3))
    assert torch.equal(torch.random.get_rng_state(), state)  # no global RNG


def test_underrepresent_rejects_bad_input() -> None:
    data = _data()
    with pytest.raises(ConfigError, match="rounds to 0"):
        underrepresent(data, 1, 0.01, torch.Generator())
    with pytest.raises(ConfigError, match="keep_fraction"):
        underrepresent(data, 1, 0.0, torch.Generator())
    with pytest.raises(ConfigError, match="keep_fraction"):
        underrepresent(data, 1, 1.5, torch.Generator())
    with pytest.raises(ConfigError, match="underrepresented_class"):
        underrepresent(data, 3, 0.5, torch.Generator())
    assert kept_count(5000, 0.1) == 500


class _Lookup(nn.Module):
    """Predicts a fixed class per image: image i carries i / 10 in its first pixel and gets ``predictions[i]``."""

    def __init__(self, predictions: torch.Tensor, k: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))
        self.predictions, self.k = predictions, k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        idx = (x[:, 0, 0, 0] * 10).round().long()
        return nn.functional.one_hot(self.predictions[idx], self.k).float() + self.w


def test_per_class_and_group_accuracy_hand_computed() -> None:
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2, 2])
    preds = torch.tensor([0, 0, 1, 1, 0, 2, 2, 2, 0, 1])
    x = torch.zeros(10, 1, 2, 2)
    x[:, 0, 0, 0] = torch.arange(10).float() / 10
    data = Dataset("t", x, labels, torch.arange(10), ("a", "b", "c"))
    correct, total = per_class_accuracy(_Lookup(preds, 3), data)
    assert (correct, total) == ([2, 1, 3], [3, 2, 5])
    g = group_accuracy(correct, total, 1)
    assert g["acc_small"] == 0.5 and g["acc_rest"] == pytest.approx(5 / 8) and g["acc_overall"] == 0.6
    assert g["gap"] == pytest.approx(5 / 8 - 0.5)


def test_clip_statistics_per_class() -> None:
    dp = SimpleNamespace(max_grad_norm=1.0, last_norms=torch.tensor([0.5, 2.0, 3.0, 0.25]))
    stats = ClipStatistics(dp, 3)  # type: ignore[arg-type]
    batch = Batch(torch.zeros(4, 1), torch.tensor([0, 0, 2, 2]), torch.arange(4))
    stats.on_step(None, batch, torch.tensor(0.0))
    s = stats.summary()
    assert s["seen"] == [2.0, 0.0, 2.0] and s["fraction_clipped"][0] == 0.5 and s["fraction_clipped"][2] == 0.5
    assert s["mean_grad_norm"][0] == pytest.approx(1.25) and math.isnan(s["mean_grad_norm"][1])
    other = ClipStatistics(dp, 3)  # type: ignore[arg-type]
    other.load_state_dict(stats.state_dict())
    assert other.summary()["mean_grad_norm"][2] == pytest.approx(1.625)


def test_summary_pairs_seeds_and_computes_drops() -> None:
    def row(seed: int, arm: str, small: float, rest: float) -> dict:
        return {
            "seed": seed,
            "arm": arm,
            "acc_small": small,
            "acc_rest": rest,
            "acc_overall": (small + rest) / 2,
            "gap": rest - small,
            "per_class_accuracy": [rest, small],
        }

    rows = [
        row(0, "non-private", 0.8, 0.95),
        row(0, "dp-sgd", 0.3, 0.9),
        row(1, "non-private", 0.7, 0.97),
        row(1, "dp-sgd", 0.4, 0.91),
        row(2, "non-private", 0.75, 0.96),
        row(2, "dp-sgd", 0.2, 0.89),
    ]
    s = summarize_impact(rows)
    assert s["seeds"] == [0, 1, 2]
    assert s["drop"]["drop_small"]["mean"] == pytest.approx((0.5 + 0.3 + 0.55) / 3)
    assert s["drop"]["drop_rest"]["mean"] == pytest.approx((0.05 + 0.06 + 0.07) / 3)
    assert s["drop"]["gap_increase"]["mean"] == pytest.approx(s["drop"]["drop_small"]["mean"] - 0.06)
    lo, hi = s["drop"]["drop_rest"]["lo"], s["drop"]["drop_rest"]["hi"]
    assert lo == pytest.approx(0.06 - 4.302652729911275 * 0.01 / math.sqrt(3)) and hi > 0.06
    assert s["effect"]["dp_gap_larger_significant"] and s["effect"]["drop_ratio_small_over_rest"] == pytest.approx(
        0.45 / 0.06
    )
    assert s["arms"]["dp-sgd"]["per_class_accuracy"][1]["mean"] == pytest.approx(0.3)
    json.dumps(s, allow_nan=False)  # plain JSON: no inf / NaN
