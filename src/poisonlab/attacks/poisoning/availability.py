"""Availability poisoning for secure dataset release: perturb every released image so that training on the
release descends a loss that destroys clean accuracy (gradient alignment with a reverse cross-entropy target)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from poisonlab.attacks.poisoning.adversarial_poisons import (
    adversarial_objective,
    class_affinity,
    nearest_derangement,
    shift_map,
)
from poisonlab.attacks.poisoning.crafter import Crafter
from poisonlab.attacks.poisoning.gradient_matching import alignment, init_delta, parameters_of, pixel_step_scale
from poisonlab.attacks.poisoning.poison_set import PoisonSet
from poisonlab.attacks.poisoning.protect_config import Objective, ProtectConfig
from poisonlab.attacks.poisoning.signed_adam import SignedAdam, SignedStep, step_decay
from poisonlab.data.dataset import Dataset
from poisonlab.errors import CheckpointError, Interrupted
from poisonlab.rng import SeedTree
from poisonlab.training.augment import DifferentiableAugment
from poisonlab.utils.progress import progress_bar

RECIPE = "availability"
NO_CLASS = -1  # PoisonSet.adv_class of an untargeted release


@dataclass(frozen=True)
class ProtectTask:
    """What the data owner protects: the clean training set and the ids it perturbs (all of them, by default)."""

    train: Dataset
    protect_ids: torch.Tensor
    label_map: torch.Tensor | None = None
    """adversarial-targeted: a fixed permutation (online batches after the first); None = from ``label_map``."""


def reverse_cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean of -log(1 - p_y) (the reference's ``reverse_xent``), computed stably as
    ``logsumexp(z) - logsumexp(z_{j != y})``. A descent step on it pushes p_y down."""
    others = logits.masked_fill(nn.functional.one_hot(y, logits.shape[1]).bool(), float("-inf"))
    return (logits.logsumexp(1) - others.logsumexp(1)).mean()


def availability_loss(logits: torch.Tensor, y: torch.Tensor, objective: Objective) -> torch.Tensor:
    """The loss a victim should descend to lose clean accuracy: reverse CE, or the negated cross-entropy."""
    if objective == "reverse-ce":
        return reverse_cross_entropy(logits, y)
    return -nn.functional.cross_entropy(logits, y)


def availability_gradient(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, objective: Objective, chunk: int = 512
) -> list[torch.Tensor]:
    """g_tgt = grad_theta of the mean availability loss over ``(x, y)``, detached (a constant of the crafting).

    Computed in chunks of ``chunk`` samples (weighted by their size), so a whole release fits in memory."""
    params = parameters_of(model)
    total = [torch.zeros_like(p) for p in params]
    n = x.shape[0]
    for start in range(0, n, chunk):
        xs, ys = x[start : start + chunk], y[start : start + chunk]
        loss = availability_loss(model(xs), ys, objective) * (xs.shape[0] / n)
        for acc, g in zip(total, torch.autograd.grad(loss, params, materialize_grads=True)):
            acc += g.detach()
    return total


class AvailabilityPoisoning(Crafter):
    """Poisoning for secure dataset release (Fowl, Chiang, Goldblum, Geiping, Bansal, Czaja, Goldstein, arXiv
    2103.02683): perturb the released images so that a model trained on them with their true labels descends the
    reverse cross-entropy of clean data, i.e. un-learns the task.

    Threat model: the owner perturbs up to 100% of its release within l-inf eps (8/255); the competitor trains any
    architecture from scratch on it (black-box transfer from the owner's surrogates).

    Algorithm (ALGORITHMS.md section 4, engine shared with :class:`GradientMatching`): the protected ids are cut
    into poison batches of ``pbatch`` samples, in the given order. For each batch B the target gradient is
    ``g_tgt = grad_theta L_rev(f(x_B), y_B)`` on the clean images (``target_scope: batch``; ``all`` takes it over
    the whole release once), per surrogate. Then, per restart, ``steps`` signed-Adam steps (lr ``tau / E`` in the
    surrogate's normalised units, ``* pbatch / 512``, step decay) minimise the ensemble mean of
    ``1 - cos(grad_theta CE(f(aug(x_B + d)), y_B), g_tgt)`` (one batched double-backward per surrogate, via
    :func:`alignment`), each followed by projection onto the l-inf ball and the [0, 1] box. The restart with the
    lowest final loss is kept. Batches are independent (disjoint deltas, own targets), so crafting them one after
    another equals the reference's interleaved loop up to the augmentation stream, and a batch is the natural unit
    of checkpointing and of online release. Surrogates are in eval mode.

    ``method: adversarial-targeted`` / ``adversarial-untargeted`` replace the alignment by the adversarial poisons
    of the same reference code (:mod:`~poisonlab.attacks.poisoning.adversarial_poisons`): each step descends the
    ensemble mean of CE towards ``(y + 1) mod C`` (or -CE at ``y``) on ``aug(x_B + d)``, one backward per
    surrogate and minibatch of ``minibatch`` samples, with PGD steps of ``pgd_tau * eps`` (no decay) unless
    ``optimizer`` says otherwise.

    Args:
        config: the protection recipe (``ProtectConfig``).
        augment: differentiable shift/flip of the poisons at every step (the victim recipe's augmentation).
        checkpointer: when given, state is saved every ``config.checkpoint_every`` steps and after every batch,
            and :meth:`craft` resumes from the newest checkpoint (bit-identical on CPU).
        should_stop: polled after every step; when True the state is saved and :class:`Interrupted` raised.
        on_step: called after every step with ``{"batch", "restart", "step", "loss", "lr"}``.
        progress: show a progress bar.
    """

    name = RECIPE

    def __init__(self, config: ProtectConfig, augment: bool = False, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)  # type: ignore[arg-type]
        self.augment = augment

    def _check(self, task: Any, surrogates: Any) -> None:
        if task.protect_ids.numel() == 0:
            raise ValueError("nothing to protect: protect_ids is empty")

    def _craft(self, task: Any, surrogates: list[nn.Module], seeds: SeedTree) -> PoisonSet:
        cfg: ProtectConfig = self.config  # type: ignore[assignment]
        device = next(surrogates[0].parameters()).device
        ids = task.protect_ids.cpu()
        pos = task.train.positions_of(ids)
        x_all = task.train.images[pos].to(device)
        y_all = task.train.labels[pos].to(device)
        batches = [(s, min(s + cfg.pbatch, len(ids))) for s in range(0, len(ids), cfg.pbatch)]
        shared = None
        if cfg.method == "alignment" and cfg.target_scope == "all":
            shared = [availability_gradient(m, x_all, y_all, cfg.objective, cfg.pbatch) for m in surrogates]
        augment = DifferentiableAugment.for_shape(task.train.shape) if self.augment else None
        label_map = None
        if cfg.method == "adversarial-targeted":
            label_map = self._permutation(task, surrogates, x_all, y_all)
        if cfg.crafting_optimizer == "pgd":
            tau0, scale = cfg.pgd_tau * float(cfg.eps), torch.ones(1, device=device)
        else:
            tau0 = cfg.tau * (cfg.pbatch / 512) / len(surrogates)
            scale = pixel_step_scale(surrogates[0], x_all.shape[1])
        state = self._initial_release_state(ids, x_all.shape)
        done = (state["batch"] * cfg.restarts + state["restart"]) * cfg.steps + state["step"]
        with progress_bar(len(batches) * cfg.restarts * cfg.steps, "protect", self.progress, initial=done) as bar:
            while state["batch"] < len(batches):
                b = state["batch"]
                lo, hi = batches[b]
                x, y = x_all[lo:hi], y_all[lo:hi]
                target = shared
                if target is None and cfg.method == "alignment":
                    target = [availability_gradient(m, x, y, cfg.objective, cfg.pbatch) for m in surrogates]
                while state["restart"] < cfg.restarts:
                    self._run_restart(state, x, y, surrogates, target, label_map, augment, tau0, scale, seeds, bar)
                best = state["best"]
                state["deltas"][lo:hi] = best["delta"].cpu()
                state["batch_losses"].append(best["loss"])
                state["restart_losses"].append(list(state["scores"]))
                state.update(batch=b + 1, restart=0, step=0, scores=[], best=None, current=None)
                self._save(state)
        return PoisonSet(
            poison_ids=ids,
            deltas=state["deltas"].float().contiguous(),
            target_ids=torch.zeros(0, dtype=torch.long),
            adv_class=NO_CLASS,
            eps=float(cfg.eps),
            recipe=self.name,
            seeds=seeds.record(),
            restart_losses=tuple(float(v) for v in state["batch_losses"]),
            meta={
                "method": cfg.method,
                "optimizer": cfg.crafting_optimizer,
                "objective": cfg.objective,
                "target_scope": cfg.target_scope,
                "steps": cfg.steps,
                "restarts": cfg.restarts,
                "pbatch": cfg.pbatch,
                "minibatch": cfg.minibatch,
                "ensemble": len(surrogates),
                "augment": self.augment,
                "batch_restart_losses": state["restart_losses"],
                **({} if label_map is None else {"label_map": label_map.tolist()}),
            },
        )

    def _permutation(
        self, task: ProtectTask, surrogates: list[nn.Module], x: torch.Tensor, y: torch.Tensor
    ) -> torch.Tensor:
        """The label permutation of the class-targeted method: the task's, or ``label_map`` of the config."""
        cfg: ProtectConfig = self.config  # type: ignore[assignment]
        c = task.train.num_classes
        if task.label_map is not None:
            table = task.label_map.long().cpu()
            if table.shape != (c,) or not torch.equal(table.sort().values, torch.arange(c)):
                raise ValueError(f"label_map must be a permutation of the {c} classes, got {table.tolist()}")
            return table
        if cfg.label_map == "shift":
            return shift_map(c)
        return nearest_derangement(class_affinity(surrogates, x, y, c, cfg.pbatch))

    def _run_restart(
        self,
        state: dict[str, Any],
        x: torch.Tensor,
        y: torch.Tensor,
        surrogates: list[nn.Module],
        target: list[list[torch.Tensor]] | None,
        label_map: torch.Tensor | None,
        augment: nn.Module | None,
        tau0: float,
        scale: torch.Tensor,
        seeds: SeedTree,
        bar: Any,
    ) -> None:
        """Run (or finish) the current restart of the current batch, updating ``state`` in place."""
        cfg: ProtectConfig = self.config  # type: ignore[assignment]
        b, r = state["batch"], state["restart"]
        sub = seeds.child(f"batch-{b}").child(f"restart-{r}")
        adam = SignedAdam(tau0, scale) if cfg.crafting_optimizer == "signed-adam" else SignedStep(tau0, scale)
        aug_rng = sub.generator("augment", x.device)
        if state["current"] is None:
            delta = cfg.linf.project(init_delta(cfg.init, x.shape, cfg.linf, sub.generator("init")).to(x.device), x)
            loss = float("nan")
        else:
            cur = state["current"]
            delta = cur["delta"].to(x.device)
            adam.load_state_dict({k: v.to(x.device) if torch.is_tensor(v) else v for k, v in cur["adam"].items()})
            aug_rng.set_state(cur["augment_rng"].cpu())
            loss = float(cur["loss"])
        for step in range(state["step"], cfg.steps):
            if cfg.method == "alignment":
                loss, grad = alignment(delta, x, y, surrogates, target, cfg.pbatch, augment, aug_rng)
            else:
                mb = min(cfg.minibatch, cfg.pbatch)
                loss, grad = adversarial_objective(delta, x, y, surrogates, cfg.method, mb, augment, aug_rng, label_map)
            factor = 1.0 if cfg.crafting_optimizer == "pgd" else step_decay(step, cfg.steps, cfg.schedule)
            delta = cfg.linf.project(adam.step(delta, grad, factor), x).detach()
            state["step"] = step + 1
            state["current"] = {
                "delta": delta,
                "adam": adam.state_dict(),
                "augment_rng": aug_rng.get_state(),
                "loss": loss,
            }
            bar.update(1)
            if self.on_step is not None:
                self.on_step({"batch": b, "restart": r, "step": step, "loss": loss, "lr": tau0 * factor})
            if self.should_stop():
                self._save(state)
                raise Interrupted(f"protection stopped at batch {b} restart {r} step {step + 1}; checkpoint saved")
            if (step + 1) % cfg.checkpoint_every == 0 and step + 1 < cfg.steps:
                self._save(state)
        state["scores"].append(loss)
        if state["best"] is None or loss < state["best"]["loss"]:
            state["best"] = {"delta": delta.cpu(), "loss": loss, "restart": r}
        state.update(restart=r + 1, step=0, current=None)

    # ------------------------------------------------------------------ state
    def _initial_release_state(self, ids: torch.Tensor, shape: torch.Size) -> dict[str, Any]:
        fresh = {
            "protect_ids": ids,
            "deltas": torch.zeros(shape),
            "batch": 0,
            "restart": 0,
            "step": 0,
            "scores": [],
            "best": None,
            "current": None,
            "batch_losses": [],
            "restart_losses": [],
        }
        state = None if self.checkpointer is None else self.checkpointer.load_latest()
        if state is None:
            return fresh
        try:
            if not torch.equal(state["protect_ids"], ids) or state["deltas"].shape != shape:
                raise ValueError("the checkpoint was crafted for other ids")
            state["scores"] = [float(v) for v in state["scores"]]
            state["batch_losses"] = [float(v) for v in state["batch_losses"]]
            state["restart_losses"] = [[float(v) for v in r] for r in state["restart_losses"]]
            int(state["batch"]), int(state["restart"]), int(state["step"])
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise CheckpointError(f"{self.checkpointer.root}: cannot resume protection ({err})") from None
        return state

    def _save(self, state: dict[str, Any]) -> None:
        if self.checkpointer is not None:
            cfg = self.config
            self.checkpointer.save(
                (state["batch"] * cfg.restarts + state["restart"]) * cfg.steps + state["step"], state
            )
