"""The in-process federated round engine: sample clients, train them locally, aggregate, checkpoint.

Every round's randomness is derived by name from the seed tree (``sampling/round<r>``,
``client/r<r>/c<id>``, ``aggregate/round<r>``, ``attack/round<r>``), so a round does not depend on how the
previous ones were computed, and a run resumed from its last completed round ends bit-identical to an
uninterrupted one. Checkpoints are written atomically after every completed round.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import torch

from poisonlab.errors import CheckpointError, Interrupted
from poisonlab.fl.local import LocalTrainer
from poisonlab.fl.messages import ClientUpdate, ServerPayload
from poisonlab.io.checkpoint import Checkpointer
from poisonlab.rng import SeedTree
from poisonlab.utils.progress import progress_bar

if TYPE_CHECKING:
    from poisonlab.defenses.aggregation.base import Aggregator


class Participant(Protocol):
    """Anything that answers a payload with an update (the model-replacement attacker, a Flower client)."""

    client_id: int

    def update(self, payload: ServerPayload, generator: torch.Generator) -> ClientUpdate: ...


@dataclass(frozen=True)
class Federation:
    """Who takes part.

    Args:
        shards: per client, the rows of the training set it holds.
        per_round: n (fixed sampling) or the expected count (Poisson sampling).
        eta: the global learning rate.
        sampling: "fixed" (n of N without replacement) or "poisson" (each client with probability n/N).
        excluded: clients never sampled by chance (the compromised one; it takes part only when scheduled).
    """

    shards: tuple[torch.Tensor, ...]
    per_round: int
    eta: float
    sampling: str = "fixed"
    excluded: tuple[int, ...] = ()

    @property
    def clients(self) -> int:
        return len(self.shards)

    def sample(self, generator: torch.Generator) -> list[int]:
        """This round's honest participants, in a generator-determined order."""
        pool = torch.tensor([c for c in range(self.clients) if c not in self.excluded], dtype=torch.long)
        if self.sampling == "poisson":
            keep = torch.rand(len(pool), generator=generator) < self.per_round / self.clients
            return pool[keep].tolist()
        perm = torch.randperm(len(pool), generator=generator)
        return pool[perm[: min(self.per_round, len(pool))]].tolist()

    def hyperparameters(self) -> dict[str, Any]:
        return {"per_round": self.per_round, "eta": self.eta, "clients": self.clients, "sampling": self.sampling}


Evaluator = Callable[[torch.Tensor], dict[str, Any]]


class RoundEngine:
    """Run federated rounds from a global parameter vector.

    Args:
        local: the honest clients' local trainer.
        federation: clients, sampling and the global learning rate.
        aggregator: the server's rule (it sees only the updates).
        seeds: the run's seed tree (every round's generators are derived from it by name).
        evaluate: maps the global vector after a round to metrics stored in the history.
        attackers: round -> participants scheduled in that round (they take the first slots of the sample,
            replacing sampled honest clients, as the reference's single-shot attack).
        checkpointer: when given, the state is saved after every completed round and :meth:`run` resumes.
        should_stop: polled after each round; when True the engine checkpoints and raises Interrupted.
        progress: progress bar.
        hyperparameters: extra values broadcast in every payload (e.g. the local recipe).
    """

    def __init__(
        self,
        local: LocalTrainer,
        federation: Federation,
        aggregator: Aggregator,
        seeds: SeedTree,
        evaluate: Evaluator | None = None,
        attackers: dict[int, Sequence[Participant]] | None = None,
        checkpointer: Checkpointer | None = None,
        should_stop: Callable[[], bool] | None = None,
        progress: bool = False,
        hyperparameters: dict[str, Any] | None = None,
    ) -> None:
        self.local, self.federation, self.aggregator = local, federation, aggregator
        self.seeds = seeds
        self.evaluate = evaluate or (lambda g: {})
        self.attackers = attackers or {}
        self.checkpointer = checkpointer
        self.should_stop = should_stop or (lambda: False)
        self.progress = progress
        self.extra = dict(hyperparameters or {})

    def _generator(self, name: str) -> torch.Generator:
        # An unrecorded copy of the tree: per-round names would otherwise swell the run's seed record.
        return SeedTree(self.seeds.root, self.seeds.path).generator(name)

    def run_round(self, global_vec: torch.Tensor, r: int) -> tuple[torch.Tensor, dict[str, Any]]:
        """One round r (1-based): returns the new global vector and the round's record."""
        t0 = time.perf_counter()
        honest = self.federation.sample(self._generator(f"sampling/round{r}"))
        scheduled = list(self.attackers.get(r, ()))
        if scheduled and self.federation.sampling == "fixed":
            honest = honest[: max(0, self.federation.per_round - len(scheduled))]
        payload = ServerPayload(global_vec, r, {**self.federation.hyperparameters(), **self.extra})
        updates: list[ClientUpdate] = [
            p.update(payload, self._generator(f"attack/round{r}/c{p.client_id}")) for p in scheduled
        ]
        if honest:
            shards = [self.federation.shards[c] for c in honest]
            gens = [self._generator(f"client/r{r}/c{c}") for c in honest]
            deltas = self.local.deltas(global_vec, shards, gens)
            updates += [ClientUpdate(c, deltas[k], len(s)) for k, (c, s) in enumerate(zip(honest, shards))]
        t1 = time.perf_counter()
        if updates:
            agg = self.aggregator.aggregate(updates, self._generator(f"aggregate/round{r}"))
            new = global_vec + self.federation.eta * agg.delta
            accepted, info = list(agg.accepted), agg.info
        else:
            new, accepted, info = global_vec.clone(), [], {}
        record: dict[str, Any] = {
            "round": r,
            "participants": [u.client_id for u in updates],
            "attackers": [p.client_id for p in scheduled],
            "accepted": accepted,
            "aggregator": info,
            "train_seconds": t1 - t0,
            "aggregate_seconds": time.perf_counter() - t1,
        }
        if scheduled:
            record["attack_info"] = {str(p.client_id): dict(getattr(p, "last", {})) for p in scheduled}
        record.update(self.evaluate(new))
        return new, record

    def run(self, global_vec: torch.Tensor, rounds: int) -> tuple[torch.Tensor, list[dict[str, Any]]]:
        """Run rounds 1..``rounds`` (resuming after the last checkpointed round); returns (global, history)."""
        history: list[dict[str, Any]] = []
        start = 0
        if self.checkpointer is not None:
            state = self.checkpointer.load_latest()
            if state is not None:
                global_vec, start, history = self._restore(state)
        with progress_bar(rounds, "rounds", enabled=self.progress, initial=start) as bar:
            for r in range(start + 1, rounds + 1):
                global_vec, record = self.run_round(global_vec, r)
                history.append(record)
                if self.checkpointer is not None:
                    self.checkpointer.save(r, self.state_dict(global_vec, r, history))
                bar.update(1)
                if r < rounds and self.should_stop():
                    raise Interrupted(f"stopped after round {r}; checkpoint saved, rerun the same command to resume")
        return global_vec, history

    def state_dict(self, global_vec: torch.Tensor, r: int, history: list[dict[str, Any]]) -> dict[str, Any]:
        return {"global": global_vec, "round": r, "history": history, "aggregator": self.aggregator.state_dict()}

    def _restore(self, state: dict[str, Any]) -> tuple[torch.Tensor, int, list[dict[str, Any]]]:
        try:
            self.aggregator.load_state_dict(state["aggregator"])
            return state["global"], int(state["round"]), [dict(h) for h in state["history"]]
        except (KeyError, TypeError, ValueError) as err:
            raise CheckpointError(f"cannot restore the federated run: {type(err).__name__}: {err}") from None
