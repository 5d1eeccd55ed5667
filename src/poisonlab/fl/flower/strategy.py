"""A Flower ``Strategy`` that runs poisonlab's federation: our client sampling, our aggregation rules."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from flwr.common import FitIns, FitRes, Parameters, Scalar, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.server.client_manager import ClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import Strategy

from poisonlab.defenses.aggregation.base import Aggregator
from poisonlab.errors import PoisonlabError
from poisonlab.fl.engine import Federation
from poisonlab.fl.messages import ClientUpdate
from poisonlab.rng import SeedTree


def to_ndarrays(vec: torch.Tensor) -> list[np.ndarray]:
    """Our flat parameter vector as Flower's list of arrays (one array)."""
    return [vec.detach().cpu().numpy().copy()]


def from_ndarrays(arrays: Sequence[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.array(arrays[0], copy=True))


class PoisonlabStrategy(Strategy):
    """Flower strategy with poisonlab semantics, so a Flower run equals the in-process RoundEngine's.

    ``configure_fit`` samples the round's participants with our generator (``sampling/round<r>``), puts the
    scheduled attackers in the first slots, and sends each chosen Flower node (matched by partition id) a
    ``FitIns`` naming its client id and the round. ``aggregate_fit`` turns the replies into
    :class:`ClientUpdate` s in the planned order and applies our :class:`Aggregator`; the server then sets
    ``G += eta * aggregate``.

    Args:
        aggregator: the server's rule.
        federation: clients, sampling and the global learning rate.
        seeds: the run's seed tree (the in-process engine's names).
        initial: the starting global vector.
        attackers: round -> client ids of the scheduled compromised participants.
        evaluate: metrics of a global vector, recorded per round in :attr:`history`.
    """

    def __init__(
        self,
        aggregator: Aggregator,
        federation: Federation,
        seeds: SeedTree,
        initial: torch.Tensor,
        attackers: dict[int, Sequence[int]] | None = None,
        evaluate: Callable[[torch.Tensor], dict[str, Any]] | None = None,
    ) -> None:
        super().__init__()
        self.aggregator, self.federation = aggregator, federation
        self.seeds = SeedTree(seeds.root, seeds.path)
        self.global_vec = initial.clone()
        self.attackers = {r: list(ids) for r, ids in (attackers or {}).items()}
        self.evaluate_fn = evaluate or (lambda g: {})
        self.history: list[dict[str, Any]] = []
        self._planned: dict[int, list[int]] = {}

    def __repr__(self) -> str:
        return f"PoisonlabStrategy({self.aggregator.name})"

    def initialize_parameters(self, client_manager: ClientManager) -> Parameters | None:
        return ndarrays_to_parameters(to_ndarrays(self.global_vec))

    def plan(self, server_round: int) -> list[int]:
        """Client ids of the round, attackers first (as :meth:`RoundEngine.run_round`)."""
        honest = self.federation.sample(self.seeds.generator(f"sampling/round{server_round}"))
        scheduled = self.attackers.get(server_round, [])
        if scheduled and self.federation.sampling == "fixed":
            honest = honest[: max(0, self.federation.per_round - len(scheduled))]
        return [*scheduled, *honest]

    def configure_fit(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, FitIns]]:
        ids = self.plan(server_round)
        self._planned[server_round] = ids
        client_manager.wait_for(self.federation.clients)
        by_partition = {int(getattr(p, "partition_id", cid)): p for cid, p in client_manager.all().items()}
        missing = [c for c in ids if c not in by_partition]
        if missing:
            raise PoisonlabError(f"flower: no node with partition id {missing[:5]}")
        return [(by_partition[c], FitIns(parameters, {"client_id": c, "round": server_round})) for c in ids]

    def aggregate_fit(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, FitRes]],
        failures: list[tuple[ClientProxy, FitRes] | BaseException],
    ) -> tuple[Parameters | None, dict[str, Scalar]]:
        if failures:
            raise PoisonlabError(f"flower: {len(failures)} clients failed in round {server_round}: {failures[0]!r}")
        got = {}
        for _, res in results:
            cid = int(res.metrics["client_id"])
            got[cid] = ClientUpdate(cid, from_ndarrays(parameters_to_ndarrays(res.parameters)), res.num_examples)
        updates = [got[c] for c in self._planned.pop(server_round)]
        agg = self.aggregator.aggregate(updates, self.seeds.generator(f"aggregate/round{server_round}"))
        self.global_vec = self.global_vec + self.federation.eta * agg.delta
        record = {"round": server_round, "participants": [u.client_id for u in updates], "accepted": list(agg.accepted)}
        record["aggregator"] = agg.info
        record.update(self.evaluate_fn(self.global_vec))
        self.history.append(record)
        return ndarrays_to_parameters(to_ndarrays(self.global_vec)), {}

    def configure_evaluate(self, server_round: int, parameters: Parameters, client_manager: ClientManager) -> list:
        return []

    def aggregate_evaluate(self, server_round: int, results: list, failures: list) -> tuple[float | None, dict]:
        return None, {}

    def evaluate(self, server_round: int, parameters: Parameters) -> tuple[float, dict[str, Scalar]] | None:
        return None
