"""Exposure (Secret Sharer) and canary candidate scoring against brute-force oracles."""

from __future__ import annotations

import math

import pytest
import torch

from poisonlab.attacks.inference.canary import (
    CanaryConfig,
    SecretFormat,
    canary_lines,
    candidate_log_likelihoods,
    sequence_log_likelihoods,
)
from poisonlab.data.text import CharVocab
from poisonlab.metrics.exposure import exposure, exposure_of, secret_rank
from poisonlab.models.charlm import build_charlm

VOCAB = CharVocab(tuple(sorted(set("\nmy PIN is_0123456789-"))))


def sorted_rank(scores: torch.Tensor, true_index: int) -> int:
    """Oracle: sort descending (stable, the secret first among equals) and find the secret's position."""
    order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i != true_index))
    return order.index(true_index) + 1


@pytest.mark.parametrize("seed", range(5))
def test_rank_matches_sorted_oracle_with_ties(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    scores = torch.randint(0, 20, (300,), generator=g).double()  # many ties
    for true_index in torch.randint(0, 300, (10,), generator=g).tolist():
        assert secret_rank(scores, true_index) == sorted_rank(scores, true_index)


def test_exposure_known_answers() -> None:
    assert exposure(1, 1024) == 10.0
    assert exposure(1024, 1024) == 0.0
    assert exposure(32, 1024) == 5.0
    out = exposure_of(torch.tensor([0.1, 0.9, 0.5, 0.9]), 2)
    assert out == {"rank": 3, "space": 4, "exposure": math.log2(4) - math.log2(3), "extracted": 0.0}
    assert exposure_of(torch.tensor([0.1, 0.9, 0.5, 0.9]), 1)["extracted"] == 1.0
    for bad in ((0, 10), (11, 10), (1, 0)):
        with pytest.raises(ValueError):
            exposure(*bad)


def test_secret_format_enumerates_in_order() -> None:
    fmt = SecretFormat(3, " ")
    assert fmt.space_size == 1000
    assert fmt.text(0) == "0 0 0" and fmt.text(7) == "0 0 7" and fmt.text(482) == "4 8 2" and fmt.text(999) == "9 9 9"
    assert SecretFormat(2, "").text(5) == "05"
    assert fmt.padding("_") == "_ _ _"


@pytest.mark.parametrize("separator", ["", " ", "-"])
def test_tree_scores_equal_brute_force_sequences(separator: str) -> None:
    """Batched tree scoring over the whole space equals one full forward pass per candidate."""
    model = build_charlm(len(VOCAB), torch.Generator().manual_seed(3), embed=8, hidden=16, layers=2)
    fmt = SecretFormat(3 if separator else 2, separator)
    fast = candidate_log_likelihoods(model, VOCAB, "my PIN is ", fmt, chunk=37)
    slow = sequence_log_likelihoods(model, VOCAB, "\nmy PIN is ", [fmt.text(i) for i in range(fmt.space_size)])
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=0)
    for true_index in (0, 17, fmt.space_size - 1):
        assert (
            secret_rank(fast, true_index) == sorted_rank(slow, true_index)
            or torch.isclose(slow, slow[true_index], atol=1e-5).sum() > 1
        )  # a rank can only differ through float ties


def test_likelihoods_are_a_distribution_without_separator() -> None:
    """With no separator, the candidates are every continuation of the prefix of that length made of digits
    only, so their probabilities sum to P(all d next tokens are digits) <= 1."""
    model = build_charlm(len(VOCAB), torch.Generator().manual_seed(1), embed=8, hidden=16)
    ll = candidate_log_likelihoods(model, VOCAB, "my PIN is ", SecretFormat(2, ""))
    assert 0 < float(ll.exp().sum()) <= 1


def test_canary_and_poison_lines() -> None:
    g = torch.Generator().manual_seed(0)
    c = CanaryConfig(digits=3, canary_repeats=2, replicas=3, poison_continuation="padding")
    canaries, poisons = canary_lines(c, 482, g)
    assert canaries == ["my PIN is 4 8 2"] * 2 and poisons == ["my PIN is _ _ _"] * 3
    c = c.model_copy(update={"poison_continuation": "random", "replicas": 50})
    _, poisons = canary_lines(c, 482, g)
    assert len(poisons) == 50 and len(set(poisons)) > 40 and all(p.startswith("my PIN is ") for p in poisons)
