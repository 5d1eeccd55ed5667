"""The federated experiment on Flower's (Ray-based) simulation engine, with our strategy and clients."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from poisonlab.defenses.aggregation.base import Aggregator
from poisonlab.errors import PoisonlabError
from poisonlab.fl.config import FLExperimentConfig
from poisonlab.rng import SeedTree


def _require_flower() -> None:
    try:
        import flwr  # noqa: F401
        import ray  # noqa: F401
    except ImportError as err:
        raise PoisonlabError(
            f"fl.engine: flower needs the optional extra 'fl' (flwr) and ray ({err.name} is missing)"
        ) from None


def run_flower_rounds(
    setup: Any,
    aggregator: Aggregator,
    rounds: int,
    seeds: SeedTree,
    initial: torch.Tensor | None = None,
    attacker: Any | None = None,
    attack_round: int | None = None,
    evaluate: Any | None = None,
) -> tuple[torch.Tensor, list[dict[str, Any]]]:
    """Run ``rounds`` rounds of ``setup``'s federation on Flower's simulation; returns (global, history)."""
    _require_flower()
    from flwr.common import Context
    from flwr.server import ServerConfig
    from flwr.simulation import start_simulation

    from poisonlab.fl.flower.clients import HonestFlowerClient, MaliciousFlowerClient
    from poisonlab.fl.flower.strategy import PoisonlabStrategy

    hp = {**setup.federation.hyperparameters(), **setup.hyperparameters()}
    attackers = {attack_round: [attacker.client_id]} if attacker is not None else {}
    strategy = PoisonlabStrategy(
        aggregator, setup.federation, seeds, setup.initial if initial is None else initial, attackers, evaluate
    )
    local, shards = setup.local_trainer("sequential"), setup.federation.shards

    def client_fn(context: Context) -> Any:
        pid = int(context.node_config["partition-id"])
        if attacker is not None and pid == attacker.client_id:
            return MaliciousFlowerClient(attacker, seeds, hp).to_client()
        return HonestFlowerClient(local, shards, seeds).to_client()

    logging.getLogger("flwr").setLevel(logging.WARNING)
    try:
        start_simulation(
            client_fn=client_fn,
            num_clients=setup.federation.clients,
            config=ServerConfig(num_rounds=rounds),
            strategy=strategy,
            client_resources={"num_cpus": 1},
            ray_init_args={
                "include_dashboard": False,
                "num_cpus": max(1, torch.get_num_threads()),
                "log_to_driver": False,
            },
        )
    except RuntimeError as err:  # Flower wraps every failure; surface our own one-line errors
        if isinstance(err.__cause__, PoisonlabError):
            raise err.__cause__ from None
        raise
    if len(strategy.history) != rounds:
        raise PoisonlabError(f"flower: the simulation completed {len(strategy.history)} of {rounds} rounds")
    return strategy.global_vec, strategy.history


def flower_experiment(
    config: FLExperimentConfig, workdir: Path, progress: bool = False, store: str | Path | None = None
) -> dict[str, Any]:
    """``fl_experiment`` with the experiment rounds on Flower (pretraining stays in-process and cached).

    Flower's simulation has no round checkpoints here: an interrupted Flower run starts its rounds again.
    """
    _require_flower()
    from poisonlab.fl.experiment import FLSetup, finish, make_aggregator, pretrain, server_bound

    setup = FLSetup(config)
    global0, pre = pretrain(setup, workdir, progress)
    bound = server_bound(config, pre)
    aggregator = make_aggregator(config, bound)
    attacker = setup.attacker(bound) if config.attack.kind != "none" else None
    seeds = setup.seeds.child("fl").child("run")
    _, history = run_flower_rounds(
        setup, aggregator, config.fl.rounds, seeds, global0, attacker, config.attack.round, setup.evaluate
    )
    return finish(config, workdir, setup, pre, bound, aggregator, history, store, engine_name="flower")
