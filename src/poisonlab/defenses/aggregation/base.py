"""The aggregator interface: a list of client updates in, one global update out."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from poisonlab.errors import ConfigError
from poisonlab.fl.messages import ClientUpdate


@dataclass(frozen=True)
class Aggregate:
    """The server's combined update (before the global learning rate) and what went into it.

    Args:
        delta: flat (D,) update; the server applies ``global += eta * delta``.
        accepted: ids of the clients whose updates entered the aggregate (all, unless the rule selects or rejects).
        info: per-round diagnostics (norms, scores, flagged ids), plain values only.
    """

    delta: torch.Tensor
    accepted: tuple[int, ...]
    info: dict[str, Any] = field(default_factory=dict)


class Aggregator:
    """Base class. ``aggregate`` sees only the round's updates and a generator (for noise); stateful rules
    (DP accounting) implement ``state_dict``/``load_state_dict`` so a resumed run matches."""

    name = "aggregator"

    def aggregate(self, updates: Sequence[ClientUpdate], generator: torch.Generator) -> Aggregate:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        return None


def stack(updates: Sequence[ClientUpdate]) -> tuple[torch.Tensor, tuple[int, ...]]:
    """(K, D) deltas and the client ids, in the given order; refuses an empty round or mixed shapes."""
    if not updates:
        raise ConfigError("aggregate: a round needs at least one client update")
    shapes = {u.delta.shape for u in updates}
    if len(shapes) != 1:
        raise ConfigError(f"aggregate: client updates have different shapes {sorted(shapes)}")
    return torch.stack([u.delta for u in updates]), tuple(u.client_id for u in updates)


def norms(deltas: torch.Tensor) -> torch.Tensor:
    """L2 norm of each row (each client's distance to the global model), in float64."""
    return deltas.double().norm(dim=1)


def clip_to_norm(deltas: torch.Tensor, bound: float) -> torch.Tensor:
    """Scale each row by ``min(1, bound / ||row||)`` so that every norm is at most ``bound``."""
    scale = (bound / norms(deltas).clamp_min(1e-300)).clamp(max=1.0).to(deltas.dtype)
    return deltas * scale[:, None]


def check_bound(value: float | None, field_name: str) -> float:
    if value is None or not value > 0:
        raise ConfigError(f"{field_name}: expected a positive norm bound, got {value}")
    return float(value)
