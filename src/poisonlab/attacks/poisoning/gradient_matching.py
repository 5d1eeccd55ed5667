"""Gradient matching: clean-label poisons whose training gradient aligns with the target's adversarial gradient."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, get_args

import torch
from torch import nn

from poisonlab.attacks.poisoning.config import CraftConfig, MatchingLoss
from poisonlab.attacks.poisoning.crafter import Crafter
from poisonlab.attacks.poisoning.poison_set import PoisonSet
from poisonlab.attacks.poisoning.signed_adam import SignedAdam, step_decay
from poisonlab.budget import LinfBudget
from poisonlab.data.dataset import Dataset
from poisonlab.io.checkpoint import Checkpointer
from poisonlab.models.layers import Normalize
from poisonlab.rng import SeedTree
from poisonlab.training.augment import DifferentiableAugment
from poisonlab.utils.progress import progress_bar


@dataclass(frozen=True)
class PoisonTask:
    """What the attacker works on: the clean training set, the ids it may perturb, the targets and the
    class they should receive. The targets' true labels are only used for bookkeeping."""

    train: Dataset
    poison_ids: torch.Tensor
    targets: Dataset
    adv_class: int


Retrainer = Callable[[torch.Tensor, SeedTree], list[nn.Module]]
"""``retrain(delta, seeds)``: fresh surrogates (eval mode) trained on the training set with ``delta`` added at the
task's poison ids, initialised and shuffled from ``seeds``."""


def parameters_of(model: nn.Module) -> list[nn.Parameter]:
    """The trainable parameters, in registration order: the vector the gradients are matched over."""
    return [p for p in model.parameters() if p.requires_grad]


def target_gradient(model: nn.Module, x: torch.Tensor, adv_class: int) -> list[torch.Tensor]:
    """g_t = grad_theta CE(f(x_t), y_adv) (mean over targets), detached: a constant of the optimisation."""
    y = torch.full((x.shape[0],), adv_class, dtype=torch.long, device=x.device)
    loss = nn.functional.cross_entropy(model(x), y)
    return [g.detach() for g in torch.autograd.grad(loss, parameters_of(model), materialize_grads=True)]


def poison_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """g_p = grad_theta CE(f(x_p), y_p) of the whole batch, built with ``create_graph=True`` so that the
    matching loss can be differentiated with respect to ``x_p`` (one batched double-backward)."""
    loss = nn.functional.cross_entropy(model(x), y)
    return torch.autograd.grad(loss, parameters_of(model), create_graph=True, materialize_grads=True)


def matching_loss(
    poison_grads: Sequence[torch.Tensor],
    target_grads: Sequence[torch.Tensor],
    target_norm: torch.Tensor | None = None,
    kind: MatchingLoss = "cosine",
) -> torch.Tensor:
    """``"cosine"``: 1 - <g_t, g_p> / (||g_t|| ||g_p||) over the concatenation of all parameter gradients.
    ``"scalar-product"``: -<g_t, g_p> / ||g_t||, which also rewards a larger poison gradient along g_t."""
    dot = torch.stack([(t * p).sum() for t, p in zip(target_grads, poison_grads, strict=True)]).sum()
    if target_norm is None:
        target_norm = torch.stack([t.pow(2).sum() for t in target_grads]).sum().sqrt()
    if kind == "scalar-product":
        return -dot / target_norm
    if kind != "cosine":
        raise ValueError(f"matching loss {kind!r}, expected one of {', '.join(get_args(MatchingLoss))}")
    p_norm = torch.stack([p.pow(2).sum() for p in poison_grads]).sum().sqrt()
    return 1 - dot / (target_norm * p_norm)


def perturbed_minibatches(
    delta: torch.Tensor,
    x: torch.Tensor,
    size: int,
    augment: nn.Module | None = None,
    generator: torch.Generator | None = None,
) -> Iterator[tuple[slice, torch.Tensor, torch.Tensor]]:
    """Consecutive minibatches of ``size`` poisons: their slice, a leaf copy ``d`` of the slice of ``delta`` that
    requires grad, and the inputs ``aug(x + d)`` (augmented once per minibatch, in order, from ``generator``)."""
    for start in range(0, delta.shape[0], size):
        sl = slice(start, start + size)
        d = delta[sl].detach().requires_grad_(True)
        inputs = x[sl] + d
        yield sl, d, (inputs if augment is None else augment(inputs, generator))


def alignment(
    delta: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
    surrogates: Sequence[nn.Module],
    target_grads: Sequence[Sequence[torch.Tensor]],
    pbatch: int,
    augment: nn.Module | None = None,
    generator: torch.Generator | None = None,
    kind: MatchingLoss = "cosine",
) -> tuple[float, torch.Tensor]:
    """Matching loss of ``x + delta`` (mean over poison minibatches and surrogates) and its gradient in ``delta``.

    Each minibatch of ``pbatch`` poisons is augmented once (shared by all surrogates) and takes one batched
    double-backward per surrogate; gradients of different minibatches land in disjoint slices of ``delta``.
    """
    grad = torch.zeros_like(delta)
    losses = []
    n_models = len(surrogates)
    norms = [torch.stack([g.pow(2).sum() for g in tg]).sum().sqrt() for tg in target_grads]
    for sl, d, inputs in perturbed_minibatches(delta, x, pbatch, augment, generator):
        batch_loss = 0.0
        for i, model in enumerate(surrogates):
            loss = matching_loss(poison_gradient(model, inputs, y[sl]), target_grads[i], norms[i], kind)
            (g,) = torch.autograd.grad(loss / n_models, d, retain_graph=i < n_models - 1)
            grad[sl] += g
            batch_loss += loss.item() / n_models
        losses.append(batch_loss)
    return sum(losses) / len(losses), grad


def pixel_step_scale(model: nn.Module, channels: int) -> torch.Tensor:
    """Per-channel factor from the model's normalised units to pixel01 units: the std of its first
    Normalize layer (1 when the model has none), shaped (1, C, 1, 1)."""
    device = next(model.parameters()).device
    for m in model.modules():
        if isinstance(m, Normalize):
            return m.std.detach().reshape(1, -1, 1, 1).expand(1, channels, 1, 1).clone()
    return torch.ones(1, channels, 1, 1, device=device)


class GradientMatching(Crafter):
    """Witches' Brew (Geiping, Fowl, Huang, Czaja, Taylor, Moeller, Goldstein, ICLR 2021): craft
    perturbations of a few training images so that their training gradient on a surrogate points the same
    way as the gradient that would make the target be classified as the adversarial class.

    Threat model: clean-label, <=1% of training images within l-inf 16/255; knows data+architecture, not victim seed.

    Faithful to ``JonasGeiping/poisoning-gradient-matching`` (``witch_base.py``/``witch_matching.py``):
    surrogates in eval mode (BatchNorm uses running statistics, as the reference's ``victim.eval()``);
    ``init`` randn scaled by eps and clipped to eps (not to the box, which the first projection enforces);
    every step accumulates d(loss)/d(delta) over poison minibatches of ``pbatch`` in fixed order, each
    minibatch augmented once and shared by the ensemble members; signed Adam with lr
    ``tau * (pbatch / 512) / E`` in normalised units (= ``* std`` per channel in pixels); step decay x0.1
    at M/2.667, M/1.6, M/1.142; projection onto the ball and the [0, 1] box after each step. A restart is
    scored by its loss at the last step (measured before that step's update); the lowest one is kept.
    ``config.matching = "scalar-product"`` is the reference's ``--loss scalar_product`` (-<g_t, g_p>/||g_t||,
    which rewards the size of the poison gradient along g_t as well as its direction); the default is its
    ``similarity`` (1 - cosine). Signed steps make the step size independent of the loss's scale.
    Differences: the augmentation is the Trainer's integer shift (zero fill) and flip
    (:meth:`DifferentiableAugment.for_shape`; no flips for grey images) instead of the reference's
    bilinear sub-pixel shift, so poisons see the augmentation the victim uses.

    Retraining (Sleeper Agent, NeurIPS 2022, built on the same reference code:
    ``--retrain_scenario from-scratch --retrain_iter N``): with ``config.retrain_every = N`` and a
    ``retrainer``, after every N-th step (not after the last) the surrogates are replaced by fresh ones trained
    from a new initialisation on the poisoned set as it stands, and the target gradients are recomputed; the
    Adam state and the step schedule carry on. Each restart starts again from the clean-trained surrogates.
    The retrained weights are part of the checkpoint, so a killed craft resumes bit-identically.

    Args:
        config: the crafting recipe.
        checkpointer: when given, state is saved every ``config.checkpoint_every`` steps and after each
            restart, and :meth:`craft` resumes from the newest checkpoint (bit-identical on CPU).
        should_stop: polled after every step; when True the state is saved and :class:`Interrupted` raised.
        on_step: called after every step with ``{"restart", "step", "loss", "lr"}`` (logging, tests).
        progress: show a progress bar.
        retrainer: how to retrain the surrogates on the poisoned set (needed when ``config.retrain_every``).
    """

    name = "gradient-matching"

    def __init__(
        self,
        config: CraftConfig,
        checkpointer: Checkpointer | None = None,
        should_stop: Callable[[], bool] | None = None,
        on_step: Callable[[dict[str, Any]], None] | None = None,
        progress: bool = False,
        retrainer: Retrainer | None = None,
    ) -> None:
        super().__init__(config, checkpointer, should_stop, on_step, progress)
        self.retrainer = retrainer

    def _check(self, task: PoisonTask, surrogates: Sequence[nn.Module]) -> None:
        if self.config.retrain_every and self.retrainer is None:
            raise ValueError("retrain_every needs a retrainer (how to train surrogates on the poisoned set)")

    def _retrain_due(self, steps_done: int) -> bool:
        every = self.config.retrain_every
        return bool(every) and steps_done % every == 0 and steps_done < self.config.steps

    # ------------------------------------------------------------------ main loop
    def _craft(self, task: PoisonTask, surrogates: list[nn.Module], seeds: SeedTree) -> PoisonSet:
        cfg = self.config
        budget = cfg.linf
        device = next(surrogates[0].parameters()).device
        ids = task.poison_ids.cpu()
        pos = task.train.positions_of(ids)
        x = task.train.images[pos].to(device)
        y = task.train.labels[pos].to(device)
        targets = task.targets.images.to(device)
        augment = DifferentiableAugment.for_shape(task.train.shape) if cfg.augment else None
        tau0 = cfg.tau * (cfg.pbatch / 512) / len(surrogates)
        scale = pixel_step_scale(surrogates[0], x.shape[1])
        state = self._initial_state(ids)
        total = cfg.restarts * cfg.steps
        done = state["restart"] * cfg.steps + state["step"]
        with progress_bar(total, "craft", enabled=self.progress, initial=done) as bar:
            while state["restart"] < cfg.restarts:
                r = state["restart"]
                sub = seeds.child(f"restart-{r}")
                adam = SignedAdam(tau0, scale)
                aug_rng = sub.generator("augment", device)
                models, retrains, retrained = surrogates, 0, {}
                if state["current"] is None:
                    delta = _init_delta(cfg.init, x.shape, budget, sub.generator("init")).to(device)
                    loss = float("nan")
                else:
                    cur = state["current"]
                    delta = cur["delta"].to(device)
                    adam.load_state_dict({k: _to(v, device) for k, v in cur["adam"].items()})
                    aug_rng.set_state(cur["augment_rng"].cpu())
                    loss = float(cur["loss"])
                    retrains = int(cur.get("retrains", 0))
                    if retrains:
                        models = _with_weights(surrogates, cur["surrogates"])
                        retrained = {"retrains": retrains, "surrogates": cur["surrogates"]}
                target_grads = [target_gradient(m, targets, task.adv_class) for m in models]
                for step in range(state["step"], cfg.steps):
                    loss, grad = alignment(
                        delta, x, y, models, target_grads, cfg.pbatch, augment, aug_rng, cfg.matching
                    )
                    factor = step_decay(step, cfg.steps, cfg.schedule)
                    delta = budget.project(adam.step(delta, grad, factor), x).detach()
                    if self._retrain_due(step + 1):
                        retrains += 1
                        models = self.retrainer(delta, sub.child(f"retrain-{retrains}"))  # type: ignore[misc]
                        target_grads = [target_gradient(m, targets, task.adv_class) for m in models]
                        retrained = {"retrains": retrains, "surrogates": [dict(m.state_dict()) for m in models]}
                    state["step"] = step + 1
                    rng = aug_rng.get_state()
                    state["current"] = {
                        "delta": delta, "adam": adam.state_dict(), "augment_rng": rng, "loss": loss, **retrained
                    }  # fmt: skip
                    bar.update(1)
                    if self.on_step is not None:
                        self.on_step({"restart": r, "step": step, "loss": loss, "lr": tau0 * factor})
                    self._after_step(state, r, step)
                self._end_restart(state, delta, loss)
        return self._best_poisons(task, state, seeds, len(surrogates))


def init_delta(kind: str, shape: torch.Size, budget: LinfBudget, generator: torch.Generator) -> torch.Tensor:
    """The reference's initialisations, in pixel01 units: randn * eps or U(-eps, eps), clipped to eps."""
    if kind == "zero":
        return torch.zeros(shape)
    noise = (
        torch.randn(shape, generator=generator) if kind == "randn" else torch.rand(shape, generator=generator) * 2 - 1
    )
    return (noise * budget.eps).clamp(-budget.eps, budget.eps)


_init_delta = init_delta  # former private name, kept for existing callers


def _with_weights(surrogates: Sequence[nn.Module], weights: Sequence[dict[str, torch.Tensor]]) -> list[nn.Module]:
    """Copies of ``surrogates`` carrying the checkpointed ``weights`` of retrained ones (same architectures)."""
    if len(weights) != len(surrogates):
        raise ValueError(f"the checkpoint holds {len(weights)} retrained surrogates, this craft has {len(surrogates)}")
    models = []
    for m, w in zip(surrogates, weights):
        device = next(m.parameters()).device
        twin = copy.deepcopy(m)
        twin.load_state_dict({k: v.to(device) for k, v in w.items()})
        models.append(twin.eval())
    return models


def _to(value: Any, device: torch.device) -> Any:
    return value.to(device) if isinstance(value, torch.Tensor) else value
