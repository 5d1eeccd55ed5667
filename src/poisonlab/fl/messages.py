"""Typed messages between the server and the clients of a federated round.

The server sends a :class:`ServerPayload` (global model, round, hyperparameters); each client answers with a
:class:`ClientUpdate` (its model delta, the number of examples behind it and its id). Aggregators see only the
updates, never the clients' data; a client (honest or not) sees only the payload and its own data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass(frozen=True)
class ServerPayload:
    """What the server broadcasts at the start of a round.

    Args:
        global_state: the global model's parameters as one flat float vector (see :class:`ParamLayout`).
        round: the 1-based round number.
        hyperparameters: what every participant is told: ``per_round`` (n), ``eta`` (global learning rate),
            ``clients`` (N), the local recipe and the algorithm name.
    """

    global_state: torch.Tensor
    round: int
    hyperparameters: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.global_state.dim() != 1 or not torch.is_floating_point(self.global_state):
            raise ValueError("ServerPayload.global_state: expected a flat floating-point vector")


@dataclass(frozen=True)
class ClientUpdate:
    """A client's answer: the delta ``local - global`` of its parameters.

    Args:
        client_id: the participant's id (an integer in [0, clients)).
        delta: flat vector, the same layout as the payload's ``global_state``.
        num_examples: the local examples the update was computed on (for example-weighted FedAvg).
    """

    client_id: int
    delta: torch.Tensor
    num_examples: int

    def __post_init__(self) -> None:
        if self.delta.dim() != 1 or not torch.is_floating_point(self.delta):
            raise ValueError(f"ClientUpdate {self.client_id}: delta must be a flat floating-point vector")
        if self.num_examples < 0:
            raise ValueError(f"ClientUpdate {self.client_id}: num_examples must be >= 0")

    @classmethod
    def from_weights(
        cls, client_id: int, weights: torch.Tensor, global_state: torch.Tensor, num_examples: int
    ) -> ClientUpdate:
        """An update from the client's full local weights (``weights - global_state``)."""
        if weights.shape != global_state.shape:
            raise ValueError(f"ClientUpdate {client_id}: weights {tuple(weights.shape)} != global state")
        return cls(client_id, weights - global_state, num_examples)

    def weights(self, global_state: torch.Tensor) -> torch.Tensor:
        """The client's local weights ``global_state + delta``."""
        return global_state + self.delta
