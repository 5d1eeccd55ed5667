"""MetaPoison: clean-label poisons crafted by differentiating the target's adversarial loss through a few
unrolled SGD steps of surrogate models that keep training while the poisons are crafted."""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from poisonlab.attacks.poisoning.config import CraftConfig
from poisonlab.attacks.poisoning.crafter import Crafter
from poisonlab.attacks.poisoning.gradient_matching import PoisonTask, _init_delta
from poisonlab.attacks.poisoning.poison_set import PoisonSet
from poisonlab.attacks.poisoning.scenarios import freeze_feature_extractor
from poisonlab.attacks.poisoning.surrogates import stagger_epochs
from poisonlab.attacks.poisoning.unroll import (
    CraftAdam,
    InnerSGD,
    adversarial_loss,
    craft_rate,
    trainable_parameters,
    unrolled_loss,
)
from poisonlab.config import TrainConfig
from poisonlab.data.dataset import Dataset
from poisonlab.errors import ConfigError
from poisonlab.io.checkpoint import Checkpointer
from poisonlab.models.build import init_parameters
from poisonlab.rng import SeedTree
from poisonlab.training.augment import DifferentiableAugment
from poisonlab.training.recipes import build_optimizer
from poisonlab.training.trainer import epoch_batches
from poisonlab.utils.progress import progress_bar

__all__ = ["CraftAdam", "InnerSGD", "MetaPoison", "adversarial_loss", "craft_rate", "unrolled_loss"]


class _Member:
    """A surrogate moving along its own clean training run: weights, optimizer, schedule, position, RNGs."""

    def __init__(
        self,
        model: nn.Module,
        recipe: TrainConfig,
        epoch: int,
        seeds: SeedTree,
        initial: dict[str, torch.Tensor] | None,
        device: torch.device,
    ) -> None:
        self.model = model
        self.recipe = recipe
        self.cycles = epoch < recipe.epochs  # members that start at the end stay there
        self.seeds = seeds
        self.initial = initial
        self.rng = {n: seeds.generator(n) for n in ("data", "batches")}
        self.rng.update({n: seeds.generator(n, device) for n in ("augment", "craft-augment")})
        self.batch_index, self.perm, self.resets, self.steps = 0, None, 0, 0
        self._set_epoch(epoch)

    def _set_epoch(self, epoch: int) -> None:
        """A fresh optimizer whose schedule stands at ``epoch`` (at most the last epoch of the recipe)."""
        self.optimizer, self.scheduler = build_optimizer(self.model, self.recipe)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "lr_scheduler.step() before optimizer.step()": intended here
            for _ in range(min(epoch, self.recipe.epochs - 1)):
                self.scheduler.step()
        self.epoch = epoch

    def momentum(self) -> dict[str, torch.Tensor | None]:
        state = self.optimizer.state
        return {n: state.get(p, {}).get("momentum_buffer") for n, p in trainable_parameters(self.model).items()}

    def reset(self) -> None:
        """Back to the start of the trajectory: a fresh initialisation (or the ``initial`` weights), epoch 0."""
        if self.initial is None:
            init_parameters(self.model, self.seeds.generator(f"reset-{self.resets}"))
        else:
            self.model.load_state_dict(self.initial)
        self.resets += 1
        self.batch_index, self.perm = 0, None
        self._set_epoch(0)

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "position": [self.epoch, self.batch_index, self.resets, self.steps],
            "perm": self.perm,
            "rng": {n: g.get_state() for n, g in self.rng.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        device = next(self.model.parameters()).device
        self.model.load_state_dict(state["model"])
        self.optimizer, self.scheduler = build_optimizer(self.model, self.recipe)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.epoch, self.batch_index, self.resets, self.steps = (int(v) for v in state["position"])
        self.perm = None if state["perm"] is None else state["perm"].to(device)
        for n, g in self.rng.items():
            g.set_state(state["rng"][n].cpu())


# ---------------------------------------------------------------------------------------------- the crafter
class MetaPoison(Crafter):
    """MetaPoison (Huang, Geiping, Fowl, Taylor, Goldstein, NeurIPS 2020, arXiv 2004.00225): optimise
    perturbations of a few training images so that a model that *trains* on them for K SGD steps assigns
    the targets to the adversarial class; the meta-gradient flows through the unrolled steps.

    Threat model: clean-label, targeted, victim trained from scratch; <=1% of training images within l-inf
    eps; the attacker knows the data and the architecture, not the victim's initialisation or data order.

    Each craft step, for every surrogate: the poisons (``x + delta``, true labels) are topped up to the
    recipe's batch size with clean samples drawn from the rest of the training set (when there are more
    poisons than the batch size they are split into ``ceil(P / B)`` random chunks, one unroll each); K =
    ``unroll_steps`` SGD steps of the victim recipe (its scheduled lr, momentum from the surrogate's real
    optimizer state, nesterov, weight decay; a new clean top-up each step, the poisons in every step) are
    unrolled with ``torch.func.functional_call`` and the adversarial loss of the targets at theta^(K) (CW
    margin clamped at -100, or cross-entropy) is differentiated w.r.t. delta. Batch norm runs in train mode
    with batch statistics (as the reference, whose targets share the batch); running statistics are updated
    on copies only. The gradients are averaged over surrogates; delta takes a TF-style Adam step at
    ``craft_lr`` (5-step quadratic warm-up, x0.1 at ``craft_lr_drop_every`` and x0.01 at twice that) and
    is projected onto the eps ball and the [0, 1] box. Then every surrogate takes one normal training step
    on clean data (``trajectory=clean``) with the recipe, following its own epoch order.

    The ensemble's trajectory: members start at the epochs ``stagger_epochs(recipe.epochs, M, stagger)``
    that ``train_surrogates`` trained them to (epoch 0 for the fine-tune/transfer scenarios). A member that
    starts before the end of the recipe moves along it and, on reaching the end, restarts from a fresh
    initialisation (from the seed tree; the pretrained weights for fine-tune/transfer) at epoch 0. A member
    that starts at the end (non-staggered, fully trained) stays there: it keeps training at the last
    epoch's learning rate and is never reset. The surrogates passed in are copied, never modified; every
    restart starts from them. Restarts are scored by the loss of their last step (measured before its
    update); the lowest is kept.

    Differences from ``wronnyhuang/metapoison`` (TF; ``main.py``, ``meta.py``, ``data.py``): only the
    additive perturbation (no ReColorAdv colour perturbation, ``epscolor``, smoothness loss). A craft step
    (one Adam step) sees one minibatch per surrogate and advances it one SGD step; the reference runs a
    whole epoch per craft step, every batch that holds poisons adding a meta-gradient (poisons at their
    natural rate, ~B*P/N per batch, here all of them share a batch) and the surrogates advancing an epoch.
    Its members cycle over the first ``M * stagger`` epochs with a 5-epoch lr warm-up, here over the
    recipe's epochs with its schedule. The unroll uses the recipe's momentum and weight decay (the
    reference unrolls plain SGD); the loss is taken at theta^(K) (the reference averages levels 1..K; the
    PyTorch port ``poisoning-gradient-matching:forest/witchcoven/witch_metapoison.py`` uses theta^(K));
    the gradient flows through the poisons of every unrolled step (the reference stops it after the
    first), so it is the exact derivative. The CW margin masks the adversarial logit (the reference zeroes
    it: the same whenever another logit is >= 0). delta starts U(-eps, eps) clipped to the box as in the
    reference, and is projected onto the box too (the reference clips to eps only). ``init``, ``tau``,
    ``pbatch`` and ``schedule`` are gradient-matching settings and unused; ``augment`` shifts/flips the
    unrolled batches (the reference's default is off).

    Args:
        config: the crafting recipe (``unroll_steps``, ``objective``, ``craft_lr``, ``craft_lr_drop_every``,
            ``steps``, ``restarts``, ``eps``, ``augment``, ``stagger``, ``scenario``, ``checkpoint_every``).
        recipe: the victim's training recipe; SGD only (unrolled and used to advance the surrogates).
        checkpointer: when given, state (poisons, Adam, every surrogate's weights, optimizer, schedule,
            position and RNGs) is saved every ``config.checkpoint_every`` steps and after each restart, and
            :meth:`craft` resumes from the newest checkpoint (bit-identical on CPU).
        should_stop: polled after every step; when True the state is saved and :class:`Interrupted` raised.
        on_step: called after every step with ``{"restart", "step", "loss", "lr"}`` (logging, tests).
        progress: show a progress bar.
    """

    name = "metapoison"
    eval_surrogates = False  # the surrogates are copied and trained in train mode

    def __init__(
        self,
        config: CraftConfig,
        recipe: TrainConfig,
        checkpointer: Checkpointer | None = None,
        should_stop: Callable[[], bool] | None = None,
        on_step: Callable[[dict[str, Any]], None] | None = None,
        progress: bool = False,
    ) -> None:
        super().__init__(config, checkpointer, should_stop, on_step, progress)
        self.recipe = recipe

    def _check(self, task: PoisonTask, surrogates: Sequence[nn.Module]) -> None:
        if self.recipe.optimizer != "sgd":
            raise ConfigError("train.optimizer: MetaPoison unrolls SGD steps; the recipe's optimizer must be sgd")

    # ------------------------------------------------------------------ main loop
    def _craft(self, task: PoisonTask, surrogates: list[nn.Module], seeds: SeedTree) -> PoisonSet:
        cfg = self.config
        budget = cfg.linf
        device = next(surrogates[0].parameters()).device
        ids = task.poison_ids.cpu()
        train = task.train.to(device)
        pos = train.positions_of(ids)
        x, y = train.images[pos], train.labels[pos]
        keep = torch.ones(len(train), dtype=torch.bool, device=device)
        keep[pos] = False
        pool = torch.nonzero(keep).flatten()
        targets = task.targets.images.to(device)
        state = self._initial_state(ids)
        total = cfg.restarts * cfg.steps
        with progress_bar(
            total, "craft", enabled=self.progress, initial=state["restart"] * cfg.steps + state["step"]
        ) as bar:
            while state["restart"] < cfg.restarts:
                r = state["restart"]
                sub = seeds.child(f"restart-{r}")
                members = self._members(surrogates, sub, device)
                adam = CraftAdam()
                if state["current"] is None:
                    delta = budget.project(_init_delta("rand", x.shape, budget, sub.generator("init")).to(device), x)
                    loss = float("nan")
                else:
                    cur = state["current"]
                    delta = cur["delta"].to(device)
                    adam.load_state_dict({k: _to(v, device) for k, v in cur["adam"].items()})
                    for member, saved in zip(members, cur["members"], strict=True):
                        member.load_state_dict(saved)
                    loss = float(cur["loss"])
                for step in range(state["step"], cfg.steps):
                    loss, grad = self._meta_gradient(delta, x, y, train, pool, targets, task.adv_class, members)
                    for member in members:
                        self._advance(member, train)
                    lr = craft_rate(step, cfg.craft_lr, cfg.craft_lr_drop_every)
                    delta = budget.project(adam.step(delta, grad, lr), x).detach()
                    state["step"] = step + 1
                    state["current"] = {"delta": delta, "adam": adam, "members": members, "loss": loss}
                    bar.update(1)
                    if self.on_step is not None:
                        self.on_step({"restart": r, "step": step, "loss": loss, "lr": lr})
                    self._after_step(state, r, step)
                self._end_restart(state, delta, loss, resets=[m.resets for m in members])
        return self._best_poisons(
            task,
            state,
            seeds,
            len(surrogates),
            unroll_steps=cfg.unroll_steps,
            objective=cfg.objective,
            member_resets=[int(v) for v in state["best"]["resets"]],
        )

    def _members(self, surrogates: list[nn.Module], seeds: SeedTree, device: torch.device) -> list[_Member]:
        """Copies of the surrogates at their positions on the victim recipe's trajectory."""
        scratch = self.config.scenario == "from-scratch"
        starts = stagger_epochs(self.recipe.epochs, len(surrogates), self.config.stagger) if scratch else None
        members = []
        for i, m in enumerate(surrogates):
            initial = None if scratch else {k: v.detach().clone() for k, v in m.state_dict().items()}
            epoch = starts[i] if starts is not None else 0
            members.append(_Member(copy.deepcopy(m), self.recipe, epoch, seeds.child(f"member-{i}"), initial, device))
        return members

    def _train_mode(self, model: nn.Module) -> None:
        model.train()
        if self.config.scenario == "transfer":  # frozen feature extractor: eval-mode batch norm, as victims
            freeze_feature_extractor(model)

    def _meta_gradient(
        self,
        delta: torch.Tensor,
        x: torch.Tensor,
        y: torch.Tensor,
        train: Dataset,
        pool: torch.Tensor,
        targets: torch.Tensor,
        adv_class: int,
        members: list[_Member],
    ) -> tuple[float, torch.Tensor]:
        """Mean adversarial loss over surrogates and poison chunks, and its gradient in ``delta``."""
        cfg = self.config
        size = self.recipe.batch_size
        augment = DifferentiableAugment.for_shape(train.shape) if cfg.augment else None
        grad = torch.zeros_like(delta)
        losses = []
        for member in members:
            self._train_mode(member.model)
            sgd = InnerSGD.from_optimizer(member.optimizer)
            momentum = member.momentum()
            g = member.rng["batches"]
            n_chunks = math.ceil(len(x) / size)
            order = torch.randperm(len(x), generator=g) if n_chunks > 1 else torch.arange(len(x))
            for idx in torch.tensor_split(order.to(delta.device), n_chunks):
                n_clean = max(size - len(idx), 0)
                draws = [torch.randperm(len(pool), generator=g)[:n_clean] for _ in range(cfg.unroll_steps + 1)]
                rows = [pool[sel.to(pool.device)] for sel in draws]  # a fresh clean top-up for every level
                clean = [(train.images[i], train.labels[i]) for i in rows]
                d = delta[idx].detach().requires_grad_(True)
                loss = unrolled_loss(
                    member.model, x[idx] + d, y[idx], clean, targets, adv_class, sgd, cfg.objective, momentum,
                    augment, member.rng["craft-augment"],
                )  # fmt: skip
                (g_d,) = torch.autograd.grad(loss, d)
                grad[idx] += g_d / len(members)
                losses.append(loss.item())
        return sum(losses) / len(losses), grad

    def _advance(self, member: _Member, train: Dataset) -> None:
        """One normal training step of ``member`` on clean data; at the end of the recipe, reset or stay."""
        batches = epoch_batches(len(train), self.recipe.batch_size, self.recipe.drop_last)
        if member.perm is None:
            member.perm = torch.randperm(len(train), generator=member.rng["data"]).to(train.device)
            member.batch_index = 0
        start, end = batches[member.batch_index]
        idx = member.perm[start:end]
        xb, yb = train.images[idx], train.labels[idx]
        if self.recipe.augment:
            xb = DifferentiableAugment.for_shape(train.shape)(xb, member.rng["augment"])
        model = member.model
        self._train_mode(model)
        loss = nn.functional.cross_entropy(model(xb), yb)
        member.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        member.optimizer.step()
        member.optimizer.zero_grad(set_to_none=True)
        member.steps += 1
        member.batch_index += 1
        if member.batch_index < len(batches):
            return
        member.perm, member.batch_index = None, 0
        member.epoch += 1
        if member.epoch < self.recipe.epochs:
            member.scheduler.step()
        elif member.cycles:
            member.reset()

    # ------------------------------------------------------------------ state
    def _save(self, state: dict[str, Any]) -> None:
        if self.checkpointer is None:
            return
        cur = state["current"]
        if cur is not None:  # live objects -> tensors and plain values
            cur = {
                "delta": cur["delta"],
                "adam": cur["adam"].state_dict(),
                "members": [m.state_dict() for m in cur["members"]],
                "loss": cur["loss"],
            }
        self.checkpointer.save(state["restart"] * self.config.steps + state["step"], {**state, "current": cur})


def _to(value: Any, device: torch.device) -> Any:
    return value.to(device) if isinstance(value, torch.Tensor) else value
