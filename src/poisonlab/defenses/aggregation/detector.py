"""An anomaly detector on update distance: the server rejects updates too far from the global model.

This is the check that Bagdasaryan et al.'s constrain-and-scale is built to evade: a naively scaled
model-replacement update is gamma times larger than a benign one and is caught; a constrained one is not.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from poisonlab.defenses.aggregation.base import Aggregate, Aggregator, check_bound, norms, stack
from poisonlab.defenses.aggregation.mean import weighted_mean
from poisonlab.fl.messages import ClientUpdate


class NormDetector(Aggregator):
    """Flag every update whose L2 distance to the global model ``||L_i - G|| = ||delta_i||`` exceeds ``bound``,
    drop the flagged ones and average the rest (a zero update if every one is flagged).

    Args:
        bound: the largest accepted distance (S).
    """

    name = "norm-detector"

    def __init__(self, bound: float) -> None:
        self.bound = check_bound(bound, "aggregator.norm_bound")

    def aggregate(self, updates: Sequence[ClientUpdate], generator: torch.Generator) -> Aggregate:
        deltas, ids = stack(updates)
        dist = norms(deltas)
        keep = dist <= self.bound
        flagged = [i for i, k in zip(ids, keep.tolist()) if not k]
        info = {"norms": dist.tolist(), "flagged": flagged}
        if not bool(keep.any()):
            return Aggregate(torch.zeros_like(deltas[0]), (), info)
        accepted = tuple(i for i, k in zip(ids, keep.tolist()) if k)
        return Aggregate(weighted_mean(deltas[keep], None), accepted, info)
