"""Budgets with explicit units: perturbation size (l-inf in pixel space) and number of poisons."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from poisonlab.errors import ConfigError

_TOL = 1e-6


@dataclass(frozen=True)
class LinfBudget:
    """An l-inf ball of radius ``eps`` around clean images, in the given pixel space.

    Args:
        eps: radius; for images in [0, 1] write 8/255 for "8 intensity levels".
        space: the units of ``eps``; only "pixel01" (images in [0, 1]) exists. A budget meant for
            another space (e.g. normalised inputs) is refused rather than silently rescaled.
    """

    eps: float
    space: Literal["pixel01"] = "pixel01"

    def __post_init__(self) -> None:
        if self.space != "pixel01":
            raise ConfigError(f"budget.space: unit mismatch, expected 'pixel01', got {self.space!r}")
        if not (isinstance(self.eps, (int, float)) and math.isfinite(self.eps)) or not 0 < self.eps <= 1:
            raise ConfigError(f"budget.eps: expected 0 < eps <= 1 in pixel01 units (e.g. 8/255), got {self.eps!r}")

    def project(self, delta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The nearest admissible perturbation: clip to [-eps, eps], then keep x + delta in [0, 1]."""
        delta = delta.clamp(-self.eps, self.eps)
        return (x + delta).clamp(0.0, 1.0) - x

    def check(self, x_adv: torch.Tensor, x: torch.Tensor, tol: float = _TOL) -> None:
        """Raise ValueError unless ``x_adv`` is within the ball around ``x`` and inside [0, 1]."""
        worst = float((x_adv - x).abs().max()) if x.numel() else 0.0
        if worst > self.eps + tol:
            raise ValueError(f"perturbation {worst:.6g} exceeds the l-inf budget {self.eps:.6g}")
        if x_adv.numel() and (float(x_adv.min()) < -tol or float(x_adv.max()) > 1 + tol):
            raise ValueError("perturbed images leave the valid range [0, 1]")


@dataclass(frozen=True)
class PoisonBudget:
    """How many training samples the attacker may touch: a fraction of the training set or a count.

    ``fraction=0`` is an explicit no-op (zero poisons); a positive fraction that rounds to zero
    samples is an error, never a silent no-op.
    """

    fraction: float | None = None
    count: int | None = None

    def __post_init__(self) -> None:
        if (self.fraction is None) == (self.count is None):
            raise ConfigError("budget: give exactly one of fraction or count")
        if self.fraction is not None and not (math.isfinite(self.fraction) and 0 <= self.fraction <= 1):
            raise ConfigError(f"budget.fraction: expected 0 <= fraction <= 1, got {self.fraction!r}")
        if self.count is not None and (not isinstance(self.count, int) or self.count < 0):
            raise ConfigError(f"budget.count: expected a non-negative integer, got {self.count!r}")

    def resolve(self, n: int) -> int:
        """The exact number of poisons for a training set of ``n`` samples."""
        if self.count is not None:
            if self.count > n:
                raise ConfigError(f"budget.count: {self.count} poisons but the training set has only {n} samples")
            return self.count
        assert self.fraction is not None
        k = int(round(self.fraction * n))
        if self.fraction > 0 and k == 0:
            raise ConfigError(f"budget.fraction: {self.fraction} of {n} samples rounds to 0 poisons")
        return k
