"""Model replacement and constrain-and-scale: a single federated participant backdoors the global model.

Paper: Bagdasaryan, Veit, Hua, Estrin, Shmatikov, "How To Backdoor Federated Learning", AISTATS 2020
(arXiv 1807.00459); reference code ebagdasa/backdoor_federated_learning (``training.py``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from poisonlab.attacks.federated.backdoor_tasks import FLBackdoorTask
from poisonlab.errors import ConfigError
from poisonlab.fl.messages import ClientUpdate, ServerPayload
from poisonlab.fl.params import ParamLayout

SAFETY = 1e-5
"""Relative margin kept below the norm bound, so float32 rounding of the scaled update cannot cross it."""


@dataclass(frozen=True)
class AttackerRecipe:
    """The attacker's local training (reference defaults, ``utils/params.yaml``).

    Args:
        epochs: local epochs (``retrain_poison`` 15).
        lr: SGD learning rate (``poison_lr`` 0.05).
        momentum: SGD momentum (0.9).
        weight_decay: 5e-4 (the reference builds the poison optimizer with the benign ``decay``).
        batch_size: 64.
        per_batch: c, backdoor inputs per batch (the rest of the batch stays clean).
        step_lr: multiply the lr by 0.1 after 20% and after 80% of the epochs (``poison_step_lr``).
        adaptive_lr: divide the lr by 50 if the global model already has > 20% backdoor accuracy on the
            attacker's backdoor inputs, and again by 100 above 60%.
        stop_loss: stop once the backdoor loss is at most this, unless clean accuracy fell (reference 1e-4).
    """

    epochs: int = 15
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 64
    per_batch: int = 20
    step_lr: bool = True
    adaptive_lr: bool = True
    stop_loss: float = 1e-4

    def __post_init__(self) -> None:
        if self.per_batch < 1 or self.per_batch > self.batch_size:
            raise ConfigError(f"attack.per_batch: expected 1..{self.batch_size}, got {self.per_batch}")


class ModelReplacement:
    """Model replacement (Algorithm A) and, with ``alpha < 1`` and/or ``norm_bound``, constrain-and-scale (B).

    1. Starting from the global model G, train X on batches that mix ``per_batch`` backdoor inputs with clean
       ones, minimising ``alpha * CE + (1 - alpha) * ||X - G||_2`` (the anomaly term, alpha = 1 disables it).
    2. Submit ``gamma * (X - G)``. gamma defaults to n / eta from the payload, so that with FedAvg
       ``G + (eta / n) * sum_i delta_i = X + (eta / n) * sum_benign delta_i``: the global model is replaced by X.
    3. Constrain-and-scale against a server that bounds update norms by S: during training X is projected
       after every step onto ``||X - G|| <= S / gamma`` (the reference projects after each step as well), and
       the scale actually used is ``min(gamma, S / ||X - G||)``, so the submitted norm is at most S.

    Threat model: one compromised participant selected in one round; it controls its local training and the
    update it submits and knows n, eta and (for constrain-and-scale) the server's norm bound S; it cannot see
    or change the other participants' updates or the aggregator.

    Args:
        task: the backdoor task.
        model: the architecture (copied; the attacker trains its own copy).
        layout: the parameter layout of ``model``.
        images: the attacker's clean images (its local data).
        labels: their labels.
        recipe: local training recipe.
        client_id: the participant id the attacker submits under.
        gamma: scale; None = n / eta from the payload.
        alpha: weight of the classification loss (1.0 = plain model replacement).
        norm_bound: S for constrain-and-scale (None: no bound).
    """

    def __init__(
        self,
        task: FLBackdoorTask,
        model: nn.Module,
        layout: ParamLayout,
        images: torch.Tensor,
        labels: torch.Tensor,
        recipe: AttackerRecipe,
        client_id: int,
        gamma: float | None = None,
        alpha: float = 1.0,
        norm_bound: float | None = None,
    ) -> None:
        if not 0 <= alpha <= 1:
            raise ConfigError(f"attack.alpha: expected 0 <= alpha <= 1, got {alpha}")
        if gamma is not None and not gamma > 0:
            raise ConfigError(f"attack.gamma: expected > 0, got {gamma}")
        if norm_bound is not None and not norm_bound > 0:
            raise ConfigError(f"attack.norm_bound: expected > 0, got {norm_bound}")
        if len(images) == 0:
            raise ConfigError("attack.samples: the attacker needs some clean local data")
        self.task, self.layout, self.recipe = task, layout, recipe
        self.model = copy.deepcopy(model)
        self.images, self.labels = images, labels
        self.client_id, self.gamma, self.alpha, self.norm_bound = client_id, gamma, alpha, norm_bound
        self.last: dict[str, float] = {}

    def scale_for(self, payload: ServerPayload) -> float:
        """gamma: the configured value, else n / eta from the payload."""
        if self.gamma is not None:
            return self.gamma
        hp = payload.hyperparameters
        return float(hp["per_round"]) / float(hp["eta"])

    def update(self, payload: ServerPayload, generator: torch.Generator) -> ClientUpdate:
        """Train the backdoored model X from the payload and submit the scaled update."""
        g = payload.global_state
        gamma = self.scale_for(payload)
        limit = None if self.norm_bound is None else self.norm_bound * (1 - SAFETY)
        radius = None if limit is None else limit / gamma
        x = self.train(g, generator, radius)
        diff = x - g
        dist = float(diff.double().norm())
        used = gamma if limit is None or dist == 0 else min(gamma, limit / dist)
        self.last.update(gamma=gamma, gamma_used=used, distance=dist, submitted_norm=used * dist)
        return ClientUpdate(self.client_id, used * diff, len(self.images))

    # ------------------------------------------------------------------ local training
    def train(self, global_vec: torch.Tensor, generator: torch.Generator, radius: float | None) -> torch.Tensor:
        """The backdoored local model X as a flat vector."""
        r = self.recipe
        model = self.layout.load_into(self.model, global_vec)
        params = [p for _, p in model.named_parameters()]
        anchor = self.layout.unflatten(global_vec.detach())
        names = list(self.layout.names)
        lr = self._initial_lr(model)
        opt = torch.optim.SGD(params, lr=lr, momentum=r.momentum, weight_decay=r.weight_decay)
        milestones = [int(0.2 * r.epochs), int(0.8 * r.epochs)] if r.step_lr else []
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestones, gamma=0.1)
        clean_start = self._clean_accuracy(model)
        n, epochs_run = len(self.images), 0
        model.train()
        for _ in range(r.epochs):
            perm = torch.randperm(n, generator=generator)
            for s in range(0, n, r.batch_size):
                idx = perm[s : s + r.batch_size]
                count = min(r.per_batch, len(idx))
                xb, yb = self.task.poison(self.images[idx], self.labels[idx], count, generator)
                loss = F.cross_entropy(model(xb), yb)
                if self.alpha < 1:
                    dist = torch.linalg.vector_norm(
                        torch.cat([(p - anchor[k]).reshape(-1) for k, p in zip(names, params)])
                    )
                    loss = self.alpha * loss + (1 - self.alpha) * dist
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if radius is not None:
                    self._project(params, names, anchor, radius)
            sched.step()
            epochs_run += 1
            if self._backdoor_loss(model) <= r.stop_loss and self._clean_accuracy(model) >= clean_start:
                break
        self.last = {"lr": lr, "epochs": float(epochs_run), "backdoor_loss": self._backdoor_loss(model)}
        return self.layout.flatten(model)

    def _initial_lr(self, model: nn.Module) -> float:
        lr = self.recipe.lr
        if self.recipe.adaptive_lr:
            acc = self._backdoor_accuracy(model)
            if acc > 0.2:
                lr /= 50
            if acc > 0.6:
                lr /= 100
        return lr

    @torch.no_grad()
    def _project(self, params: list[torch.Tensor], names: list[str], anchor: dict, radius: float) -> None:
        diffs = [p - anchor[k] for k, p in zip(names, params)]
        dist = float(torch.sqrt(sum((d.double() ** 2).sum() for d in diffs)))
        if dist > radius:
            scale = radius / dist
            for p, k, d in zip(params, names, diffs):
                p.copy_(anchor[k] + scale * d)

    @torch.no_grad()
    def _backdoor_logits(self, model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.task.attacker_inputs(self.images, self.labels)
        was = model.training
        model.eval()
        out = model(x)
        model.train(was)
        return out, y

    def _backdoor_loss(self, model: nn.Module) -> float:
        out, y = self._backdoor_logits(model)
        return float(F.cross_entropy(out, y)) if len(y) else 0.0

    def _backdoor_accuracy(self, model: nn.Module) -> float:
        out, y = self._backdoor_logits(model)
        return float((out.argmax(1) == y).float().mean()) if len(y) else 0.0

    @torch.no_grad()
    def _clean_accuracy(self, model: nn.Module) -> float:
        was = model.training
        model.eval()
        acc = float((model(self.images).argmax(1) == self.labels).float().mean())
        model.train(was)
        return acc
