"""Federated learning: typed messages, client partitions, vectorised local training and the round engine."""

from poisonlab.fl.engine import Federation, RoundEngine
from poisonlab.fl.local import LocalRecipe, LocalTrainer
from poisonlab.fl.messages import ClientUpdate, ServerPayload
from poisonlab.fl.params import ParamLayout
from poisonlab.fl.partition import dirichlet_partition, iid_partition

__all__ = [
    "ClientUpdate",
    "Federation",
    "LocalRecipe",
    "LocalTrainer",
    "ParamLayout",
    "RoundEngine",
    "ServerPayload",
    "dirichlet_partition",
    "iid_partition",
]
