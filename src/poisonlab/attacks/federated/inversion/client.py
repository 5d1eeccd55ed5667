"""The honest client of one federated round: it computes its update from its private batch.

This is the victim's side, used to produce the update under attack in experiments, tests and benchmarks.
The attacker's code receives only the returned :class:`ClientUpdate`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from poisonlab.attacks.federated.inversion.functional import local_delta, parameter_gradient
from poisonlab.attacks.federated.inversion.messages import ClientUpdate, ServerPayload
from poisonlab.errors import ConfigError


def client_update(
    payload: ServerPayload,
    images: torch.Tensor,
    labels: torch.Tensor,
    local_steps: int = 0,
    local_lr: float = 1e-4,
    images_per_step: int | None = None,
    share_labels: bool = False,
) -> ClientUpdate:
    """The update a client sends for its batch ``(images, labels)`` (images in [0, 1]).

    Args:
        payload: the model the server sent.
        images: (B, C, H, W) private images in pixel space.
        labels: (B,) their labels.
        local_steps: 0 for FedSGD (the gradient of the mean loss); n >= 1 for FedAvg (the weight delta after n
            plain SGD steps at ``local_lr``; reference default 1e-4).
        local_lr: FedAvg local learning rate.
        images_per_step: FedAvg images per local step (None: the whole batch at every step).
        share_labels: attach the labels to the update (protocols that reveal them); off by default.
    """
    if images.dim() != 4 or tuple(images.shape[1:]) != payload.data_shape:
        raise ConfigError(f"images: expected (B, {', '.join(map(str, payload.data_shape))}), got {tuple(images.shape)}")
    if local_steps < 0:
        raise ConfigError(f"local_steps: expected >= 0, got {local_steps}")
    x, y = images.to(payload.device), labels.to(payload.device)
    with torch.no_grad():
        if local_steps == 0:
            g = parameter_gradient(payload.model, payload.parameters, payload.buffers, x, y)
            tensors = {k: v.detach().clone() for k, v in g.items()}
            return ClientUpdate("gradient", tensors, len(x), labels=y.clone() if share_labels else None)
        d = local_delta(
            payload.model, payload.parameters, payload.buffers, x, y, local_steps, local_lr, images_per_step
        )
    return ClientUpdate(
        "delta",
        {k: v.detach().clone() for k, v in d.items()},
        len(x),
        local_steps=local_steps,
        local_lr=local_lr,
        images_per_step=images_per_step,
        labels=y.clone() if share_labels else None,
    )


def update_simulator(payload: ServerPayload, update: ClientUpdate) -> Callable[[torch.Tensor, torch.Tensor], dict]:
    """``f(images, labels) -> {name: tensor}``: what a client following ``update``'s public schedule would send
    for those images (the attacker's differentiable model of the client)."""
    model, params, buffers = payload.model, payload.parameters, payload.buffers
    if update.kind == "gradient":
        return lambda x, y: parameter_gradient(model, params, buffers, x, y)
    steps, lr, per_step = update.local_steps, update.local_lr, update.images_per_step
    return lambda x, y: local_delta(model, params, buffers, x, y, steps, lr, per_step)
