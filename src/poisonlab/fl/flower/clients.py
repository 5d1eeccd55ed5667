"""Flower clients around poisonlab's client logic: an honest client (our local SGD on its shard) and a malicious
one (our model-replacement attacker). Both answer with the delta, so a Flower run equals the in-process one."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from flwr.client import NumPyClient

from poisonlab.attacks.federated.model_replacement import ModelReplacement
from poisonlab.fl.flower.strategy import from_ndarrays, to_ndarrays
from poisonlab.fl.local import LocalTrainer
from poisonlab.fl.messages import ServerPayload
from poisonlab.rng import SeedTree


class HonestFlowerClient(NumPyClient):
    """Runs :class:`LocalTrainer` for the client id the strategy names, with the engine's generator names.

    Args:
        local: the local trainer (sequential strategy).
        shards: every client's rows of the training set (a simulation holds them all).
        seeds: the run's seed tree.
    """

    def __init__(self, local: LocalTrainer, shards: tuple[torch.Tensor, ...], seeds: SeedTree) -> None:
        self.local, self.shards, self.seeds = local, shards, SeedTree(seeds.root, seeds.path)

    def get_parameters(self, config: dict[str, Any]) -> list[np.ndarray]:
        return []

    def fit(self, parameters: list[np.ndarray], config: dict[str, Any]) -> tuple[list[np.ndarray], int, dict]:
        torch.set_num_threads(1)
        c, r = int(config["client_id"]), int(config["round"])
        g = from_ndarrays(parameters)
        delta = self.local.deltas(g, [self.shards[c]], [self.seeds.generator(f"client/r{r}/c{c}")])[0]
        return to_ndarrays(delta), len(self.shards[c]), {"client_id": c}


class MaliciousFlowerClient(NumPyClient):
    """The compromised participant: builds a :class:`ServerPayload` from the Flower parameters and config and
    answers with :meth:`ModelReplacement.update`.

    Args:
        attacker: the model-replacement (or constrain-and-scale) attacker.
        seeds: the run's seed tree.
        hyperparameters: what the server broadcasts (n, eta, ...).
    """

    def __init__(self, attacker: ModelReplacement, seeds: SeedTree, hyperparameters: dict[str, Any]) -> None:
        self.attacker, self.seeds, self.hp = attacker, SeedTree(seeds.root, seeds.path), hyperparameters

    def get_parameters(self, config: dict[str, Any]) -> list[np.ndarray]:
        return []

    def fit(self, parameters: list[np.ndarray], config: dict[str, Any]) -> tuple[list[np.ndarray], int, dict]:
        torch.set_num_threads(1)
        c, r = int(config["client_id"]), int(config["round"])
        payload = ServerPayload(from_ndarrays(parameters), r, self.hp)
        update = self.attacker.update(payload, self.seeds.generator(f"attack/round{r}/c{c}"))
        return to_ndarrays(update.delta), update.num_examples, {"client_id": c, **self.attacker.last}
