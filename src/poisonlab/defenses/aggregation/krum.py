"""Krum and Multi-Krum (Blanchard, El Mhamdi, Guerraoui, Stainer, NeurIPS 2017, "Machine Learning with
Adversaries: Byzantine Tolerant Gradient Descent")."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from poisonlab.defenses.aggregation.base import Aggregate, Aggregator, norms, stack
from poisonlab.errors import ConfigError
from poisonlab.fl.messages import ClientUpdate


def krum_scores(deltas: torch.Tensor, byzantine: int) -> torch.Tensor:
    """score(i) = sum of squared L2 distances from update i to its K - f - 2 nearest other updates (float64).

    Raises:
        ConfigError: K <= 2f + 2, where Krum's guarantee (and the neighbour count) breaks down.
    """
    k = deltas.shape[0]
    if k <= 2 * byzantine + 2:
        raise ConfigError(f"aggregator.byzantine: Krum needs more than 2f + 2 = {2 * byzantine + 2} updates, got {k}")
    d = deltas.double()
    sq = torch.cdist(d, d).pow(2)
    sq.fill_diagonal_(float("inf"))
    nearest = sq.topk(k - byzantine - 2, dim=1, largest=False).values
    return nearest.sum(1)


class Krum(Aggregator):
    """Multi-Krum: average the ``m`` updates with the lowest Krum scores; ``m = 1`` is Krum itself.

    Args:
        byzantine: f, the number of Byzantine clients tolerated (needs K > 2f + 2).
        select: m, updates averaged (1 = Krum; None = K - f, the usual Multi-Krum choice).
    """

    def __init__(self, byzantine: int = 1, select: int | None = 1) -> None:
        if byzantine < 0:
            raise ConfigError(f"aggregator.byzantine: expected >= 0, got {byzantine}")
        if select is not None and select < 1:
            raise ConfigError(f"aggregator.select: expected >= 1, got {select}")
        self.byzantine, self.select = byzantine, select
        self.name = "krum" if select == 1 else "multi-krum"

    def aggregate(self, updates: Sequence[ClientUpdate], generator: torch.Generator) -> Aggregate:
        deltas, ids = stack(updates)
        scores = krum_scores(deltas, self.byzantine)
        m = self.select if self.select is not None else deltas.shape[0] - self.byzantine
        m = min(m, deltas.shape[0])
        order = torch.sort(scores, stable=True).indices[:m]  # ties: the earlier update wins
        chosen = tuple(ids[i] for i in order.tolist())
        info = {"norms": norms(deltas).tolist(), "scores": scores.tolist(), "selected": list(chosen)}
        return Aggregate(deltas[order].mean(0), chosen, info)
