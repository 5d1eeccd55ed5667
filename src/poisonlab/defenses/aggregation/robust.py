"""Coordinate-wise robust statistics (Yin, Chen, Ramchandran, Bartlett, ICML 2018, "Byzantine-Robust Distributed
Learning: Towards Optimal Statistical Rates"): the median and the beta-trimmed mean of each coordinate."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from poisonlab.defenses.aggregation.base import Aggregate, Aggregator, norms, stack
from poisonlab.errors import ConfigError
from poisonlab.fl.messages import ClientUpdate


def coordinate_median(deltas: torch.Tensor) -> torch.Tensor:
    """The exact median of each column: the middle value, or the mean of the two middle values for even K
    (``torch.median`` would return the lower one)."""
    k = deltas.shape[0]
    s = deltas.sort(dim=0).values
    if k % 2:
        return s[k // 2].clone()
    return (s[k // 2 - 1] + s[k // 2]) / 2


def trimmed_mean(deltas: torch.Tensor, beta: float) -> torch.Tensor:
    """Per coordinate, drop the floor(beta K) largest and smallest values and average the rest (beta < 1/2
    always leaves at least one)."""
    k = deltas.shape[0]
    b = math.floor(beta * k)
    s = deltas.sort(dim=0).values
    return s[b : k - b].mean(0)


class CoordinateMedian(Aggregator):
    """Coordinate-wise median of the updates (Yin et al. 2018)."""

    name = "median"

    def aggregate(self, updates: Sequence[ClientUpdate], generator: torch.Generator) -> Aggregate:
        deltas, ids = stack(updates)
        return Aggregate(coordinate_median(deltas), ids, {"norms": norms(deltas).tolist()})


class TrimmedMean(Aggregator):
    """Coordinate-wise beta-trimmed mean (Yin et al. 2018).

    Args:
        beta: fraction trimmed at each end, 0 <= beta < 1/2 (default 0.1: one of ten at each end).
    """

    name = "trimmed-mean"

    def __init__(self, beta: float = 0.1) -> None:
        if not 0 <= beta < 0.5:
            raise ConfigError(f"aggregator.trim: expected 0 <= beta < 0.5, got {beta}")
        self.beta = float(beta)

    def aggregate(self, updates: Sequence[ClientUpdate], generator: torch.Generator) -> Aggregate:
        deltas, ids = stack(updates)
        return Aggregate(trimmed_mean(deltas, self.beta), ids, {"norms": norms(deltas).tolist()})
