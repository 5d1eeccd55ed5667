"""Budgets: projection respects the ball and the box; invalid budgets are refused."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from poisonlab.budget import LinfBudget, PoisonBudget
from poisonlab.errors import ConfigError


@settings(max_examples=60, deadline=None)
@given(eps=st.floats(1e-4, 1.0), seed=st.integers(0, 2**31 - 1), n=st.integers(0, 5))
def test_projection_is_admissible_and_idempotent(eps: float, seed: int, n: int) -> None:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 4, 4, generator=g)
    delta = (torch.rand(n, 1, 4, 4, generator=g) - 0.5) * 4
    b = LinfBudget(eps)
    p = b.project(delta, x)
    b.check(x + p, x)
    assert torch.allclose(b.project(p, x), p, atol=1e-7)


def test_projection_keeps_admissible_perturbations() -> None:
    x = torch.full((1, 1, 2, 2), 0.5)
    d = torch.tensor([[[[0.01, -0.02], [0.0, 0.03]]]])
    assert torch.equal(LinfBudget(8 / 255).project(d, x), (x + d).clamp(0, 1) - x)


def test_check_rejects_violations() -> None:
    x = torch.full((1, 4), 0.5)
    with pytest.raises(ValueError, match="exceeds"):
        LinfBudget(0.01).check(x + 0.02, x)
    with pytest.raises(ValueError, match="range"):
        LinfBudget(1.0).check(x + 0.6, x)


@pytest.mark.parametrize("eps", [0.0, -0.1, 1.5, float("nan"), float("inf")])
def test_invalid_eps(eps: float) -> None:
    with pytest.raises(ConfigError, match="budget.eps"):
        LinfBudget(eps)


def test_unit_mismatch() -> None:
    with pytest.raises(ConfigError, match="unit mismatch"):
        LinfBudget(0.1, space="normalized")  # type: ignore[arg-type]


def test_poison_budget_resolves_exactly() -> None:
    assert PoisonBudget(fraction=0.01).resolve(4000) == 40
    assert PoisonBudget(count=7).resolve(100) == 7
    assert PoisonBudget(fraction=0.0).resolve(100) == 0
    with pytest.raises(ConfigError, match="rounds to 0"):
        PoisonBudget(fraction=0.0001).resolve(4000)
    with pytest.raises(ConfigError, match="only 10"):
        PoisonBudget(count=11).resolve(10)


@pytest.mark.parametrize(
    "kwargs,field",
    [
        ({"fraction": 1.5}, "budget.fraction"),
        ({"fraction": -0.1}, "budget.fraction"),
        ({"count": -1}, "budget.count"),
        ({}, "budget"),
        ({"fraction": 0.1, "count": 3}, "budget"),
    ],
)
def test_invalid_poison_budgets(kwargs: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        PoisonBudget(**kwargs)
