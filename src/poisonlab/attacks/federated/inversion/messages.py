"""The two messages of one federated round as the honest-but-curious server sees them.

``ServerPayload`` is what the server sent (architecture, parameters, buffers, public metadata);
``ClientUpdate`` is what came back (a gradient, or a weight delta after several local steps, plus the
metadata a FedAvg protocol shares: number of images, local steps, local learning rate). Neither holds the
client's images: an inversion attack is given these two objects and nothing else (the split of
``JonasGeiping/breaching``'s ``server_payload`` / ``shared_data``). Both convert to and from plain
``{name: tensor}`` tables, so they map onto any FL engine's own message types.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from poisonlab.errors import ConfigError
from poisonlab.models.layers import Normalize

UpdateKind = Literal["gradient", "delta"]


@dataclass(frozen=True)
class ServerPayload:
    """The model state the server sent to a client, with the architecture and public metadata.

    Args:
        model: the architecture (a private copy; only its structure is used, through ``functional_call``).
        parameters: ``{name: tensor}`` of every trainable parameter, in ``model.named_parameters()`` order.
        buffers: ``{name: tensor}`` of the buffers (normalisation constants, BatchNorm running statistics).
        data_shape: (C, H, W) of one input image in pixel space [0, 1].
        num_classes: number of output classes.
    """

    model: nn.Module
    parameters: dict[str, torch.Tensor]
    buffers: dict[str, torch.Tensor]
    data_shape: tuple[int, int, int]
    num_classes: int

    @staticmethod
    def from_model(model: nn.Module, data_shape: tuple[int, int, int], num_classes: int) -> ServerPayload:
        """Snapshot ``model`` (deep copy in eval mode, detached parameter and buffer copies)."""
        arch = copy.deepcopy(model).eval()
        params = {k: v.detach().clone() for k, v in arch.named_parameters()}
        buffers = {k: v.detach().clone() for k, v in arch.named_buffers()}
        return ServerPayload(arch, params, buffers, tuple(int(s) for s in data_shape), int(num_classes))

    @property
    def device(self) -> torch.device:
        return next(iter(self.parameters.values())).device

    def normalisation(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, std) of the model's input Normalize layer, each (1, C, 1, 1); (0, 1) without one."""
        c = self.data_shape[0]
        for m in self.model.modules():
            if isinstance(m, Normalize):
                mean = m.mean.detach().reshape(1, -1, 1, 1).expand(1, c, 1, 1)
                std = m.std.detach().reshape(1, -1, 1, 1).expand(1, c, 1, 1)
                return mean.clone().to(self.device), std.clone().to(self.device)
        return torch.zeros(1, c, 1, 1, device=self.device), torch.ones(1, c, 1, 1, device=self.device)


@dataclass(frozen=True)
class ClientUpdate:
    """What a client sent back: never its data.

    Args:
        kind: ``"gradient"``: the gradient of the mean cross-entropy over the client's batch at the sent
            parameters (FedSGD). ``"delta"``: ``theta_after - theta_before`` after ``local_steps`` plain SGD
            steps at ``local_lr`` (FedAvg).
        tensors: ``{parameter name: tensor}``, the same names and shapes as ``ServerPayload.parameters``.
        num_images: number of images the client trained on (public in FedAvg, where it weights the average).
        local_steps: SGD steps taken ("delta" only; 1 for a gradient).
        local_lr: their learning rate ("delta" only).
        images_per_step: images per local step, cycling through the batch in order; None = all of them.
        labels: the client's labels when the protocol shares them, else None (the attacker recovers them).
    """

    kind: UpdateKind
    tensors: dict[str, torch.Tensor]
    num_images: int
    local_steps: int = 1
    local_lr: float = 0.0
    images_per_step: int | None = None
    labels: torch.Tensor | None = field(default=None)

    def __post_init__(self) -> None:
        if self.kind not in ("gradient", "delta"):
            raise ConfigError(f"update.kind: expected 'gradient' or 'delta', got {self.kind!r}")
        if self.num_images < 1:
            raise ConfigError(f"update.num_images: expected >= 1, got {self.num_images}")
        if self.kind == "delta" and (self.local_steps < 1 or self.local_lr <= 0):
            raise ConfigError("update.local_steps/local_lr: a delta update needs local_steps >= 1 and local_lr > 0")
        if self.images_per_step is not None and not 1 <= self.images_per_step <= self.num_images:
            raise ConfigError(f"update.images_per_step: expected 1..{self.num_images}, got {self.images_per_step}")
        if self.labels is not None and self.labels.shape != (self.num_images,):
            raise ConfigError(f"update.labels: expected shape ({self.num_images},), got {tuple(self.labels.shape)}")

    def check_against(self, payload: ServerPayload) -> None:
        """Raise ConfigError unless the update has exactly the payload's parameter names and shapes."""
        if list(self.tensors) != list(payload.parameters):
            raise ConfigError("update.tensors: parameter names differ from the server payload's")
        for k, v in self.tensors.items():
            if v.shape != payload.parameters[k].shape:
                raise ConfigError(
                    f"update.tensors.{k}: shape {tuple(v.shape)}, expected {tuple(payload.parameters[k].shape)}"
                )

    def as_gradient(self) -> dict[str, torch.Tensor]:
        """A gradient-like table: the gradient itself, or ``-delta`` (points the way of the summed gradients)."""
        if self.kind == "gradient":
            return self.tensors
        return {k: -v for k, v in self.tensors.items()}
