"""The one verb of a gradient inversion attack: ``reconstruct(server_payload, client_update)``."""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch

from poisonlab.attacks.federated.inversion.labels import LabelStrategy, last_layer, recover_labels
from poisonlab.attacks.federated.inversion.messages import ClientUpdate, ServerPayload
from poisonlab.attacks.federated.inversion.reconstruction import Reconstruction


class GradientInversion(ABC):
    """Reconstruct a client's private images from the update it sent.

    Threat model: honest-but-curious server; knows the architecture and the parameters it sent, receives one
    client's update (gradient or FedAvg weight delta) and its public metadata, never the client's data.
    """

    @abstractmethod
    def reconstruct(self, payload: ServerPayload, update: ClientUpdate) -> Reconstruction:
        """Reconstruct the images behind ``update``."""

    def reconstruct_many(self, payload: ServerPayload, updates: list[ClientUpdate]) -> list[Reconstruction]:
        """Independent reconstructions of several clients' updates (subclasses may vectorise across them)."""
        return [self.reconstruct(payload, u) for u in updates]


def labels_for(payload: ServerPayload, update: ClientUpdate, strategy: LabelStrategy) -> tuple[torch.Tensor, str]:
    """The update's shared labels, else labels recovered from its classification layer."""
    if update.labels is not None:
        return update.labels.to(payload.device).long(), "shared"
    w, b = last_layer(update.as_gradient(), payload.num_classes)
    labels, rule = recover_labels(w, b, update.num_images, strategy)
    return labels.to(payload.device), f"recovered:{rule}"
