"""Honest clients' local training: SGD on each client's shard, many clients at once with ``torch.func.vmap``.

Every client j starts from the global vector and runs ``epochs`` passes over its own data in minibatches of
``batch_size`` (a fresh permutation per epoch from its own generator; the last batch may be short), with
PyTorch SGD semantics: ``d = g + wd * p``, ``buf = momentum * buf + d`` (``buf = d`` on the first step),
``p -= lr * buf``. FedSGD is the special case of one full-batch step of plain SGD.

Two strategies compute the same thing (equal up to float rounding, checked by the tests):

- ``"vmap"``: the K clients' step t is one vmapped ``grad`` over stacked (K, D) parameters; clients with fewer
  steps are masked out (their parameters and momentum stay untouched once they are done).
- ``"sequential"``: the same step, one client after another, with plain autograd (the oracle; the faster one on
  CPU for conv nets, where vmap lowers to grouped convolutions: measurements in benchmarks/RESULTS.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from poisonlab.errors import ConfigError
from poisonlab.fl.params import ParamLayout

Strategy = Literal["vmap", "sequential"]


@dataclass(frozen=True)
class LocalRecipe:
    """A client's local optimisation.

    Args:
        epochs: local passes over the client's data (reference ``retrain_no_times`` 2).
        batch_size: minibatch size (reference 64); None = the whole shard in one batch (FedSGD).
        lr: client learning rate (reference 0.1).
        momentum: SGD momentum (reference 0.9).
        weight_decay: L2 coefficient added to the gradient (reference 5e-4).
    """

    epochs: int = 2
    batch_size: int | None = 64
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ConfigError(f"fl.local.epochs: expected >= 1, got {self.epochs}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ConfigError(f"fl.local.batch_size: expected >= 1, got {self.batch_size}")
        if not self.lr > 0:
            raise ConfigError(f"fl.local.lr: expected > 0, got {self.lr}")

    @classmethod
    def fedsgd(cls, lr: float) -> LocalRecipe:
        """One full-batch gradient step of plain SGD (McMahan et al. 2017's FedSGD)."""
        return cls(epochs=1, batch_size=None, lr=lr, momentum=0.0, weight_decay=0.0)


def batch_schedule(n: int, recipe: LocalRecipe, generator: torch.Generator) -> torch.Tensor:
    """(steps, B) positions into a shard of ``n`` samples, -1 where a short last batch is padded.

    One permutation per epoch is drawn from ``generator`` (none for a full batch, which needs no order).
    """
    if n == 0:
        return torch.zeros(0, recipe.batch_size or 1, dtype=torch.long)
    b = recipe.batch_size or n
    per_epoch = -(-n // b)
    rows = []
    for _ in range(recipe.epochs):
        order = torch.arange(n) if recipe.batch_size is None else torch.randperm(n, generator=generator)
        padded = torch.full((per_epoch * b,), -1, dtype=torch.long)
        padded[:n] = order
        rows.append(padded.view(per_epoch, b))
    return torch.cat(rows)


def client_schedules(
    shards: Sequence[torch.Tensor], recipe: LocalRecipe, generators: Sequence[torch.Generator]
) -> torch.Tensor:
    """(K, T, B) rows of the training set per client and step (-1 = padding), T = the longest schedule."""
    plans = [batch_schedule(len(s), recipe, g) for s, g in zip(shards, generators)]
    t = max((p.shape[0] for p in plans), default=0)
    b = max((p.shape[1] for p in plans), default=1)
    out = torch.full((len(plans), t, b), -1, dtype=torch.long)
    for k, (plan, shard) in enumerate(zip(plans, shards)):
        if plan.numel():
            rows = torch.where(plan >= 0, shard[plan.clamp_min(0)], torch.full_like(plan, -1))
            out[k, : plan.shape[0], : plan.shape[1]] = rows
    return out


class LocalTrainer:
    """Run the local recipe for a set of honest clients and return their deltas.

    Args:
        model: the architecture (its parameter values are ignored; buffers are used as they are).
        layout: the model's :class:`ParamLayout`.
        images: the whole training set's images (N, C, H, W); shards index into it.
        labels: (N,) labels.
        recipe: the local recipe.
        strategy: "vmap" (all clients at once) or "sequential" (one by one).
    """

    def __init__(
        self,
        model: nn.Module,
        layout: ParamLayout,
        images: torch.Tensor,
        labels: torch.Tensor,
        recipe: LocalRecipe,
        strategy: Strategy = "vmap",
    ) -> None:
        if strategy not in ("vmap", "sequential"):
            raise ConfigError(f"fl.engine: unknown local strategy {strategy!r}; expected vmap or sequential")
        self.model, self.layout, self.recipe, self.strategy = model, layout, recipe, strategy
        self.images, self.labels = images, labels
        self._vgrad = vmap(grad(self._loss))

    def _loss(self, flat: torch.Tensor, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        logits = functional_call(self.model, self.layout.unflatten(flat), (x,))
        ce = F.cross_entropy(logits, y, reduction="none")
        return (ce * mask).sum() / mask.sum().clamp_min(1.0)

    def deltas(
        self, global_vec: torch.Tensor, shards: Sequence[torch.Tensor], generators: Sequence[torch.Generator]
    ) -> torch.Tensor:
        """(K, D) deltas ``local_k - global`` of the K clients with the given shards (rows of the training set)."""
        plan = client_schedules(shards, self.recipe, generators)
        if self.strategy == "sequential":
            return torch.cat([self._train(global_vec, plan[k : k + 1], batched=False) for k in range(len(shards))])
        return self._train(global_vec, plan, batched=True)

    def _train(self, global_vec: torch.Tensor, plan: torch.Tensor, batched: bool) -> torch.Tensor:
        r = self.recipe
        k = plan.shape[0]
        params = global_vec.detach().expand(k, -1).clone()
        buf = torch.zeros_like(params) if r.momentum else None
        was = self.model.training
        self.model.train()
        try:
            for t in range(plan.shape[1]):
                rows = plan[:, t]
                valid = rows >= 0
                active = valid.any(1)
                if not bool(active.any()):
                    continue
                safe = rows.clamp_min(0)
                x, y, m = self.images[safe], self.labels[safe], valid.to(params.dtype)
                if batched:
                    g = self._vgrad(params, x, y, m)
                else:  # one client: drop the padding rows; plain autograd (func.grad's overhead is ~2x here)
                    keep = valid[0]
                    leaf = params[0].detach().requires_grad_(True)
                    loss = self._loss(leaf, x[0][keep], y[0][keep], m[0][keep])
                    g = torch.autograd.grad(loss, leaf)[0][None]
                with torch.no_grad():
                    if r.weight_decay:
                        g = g + r.weight_decay * params
                    if buf is not None:
                        buf = torch.where(active[:, None], r.momentum * buf + g, buf)
                        g = buf
                    params = torch.where(active[:, None], params - r.lr * g, params)
        finally:
            self.model.train(was)
        return params - global_vec
