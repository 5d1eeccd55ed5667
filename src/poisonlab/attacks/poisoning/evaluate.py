"""Poison success: retrain fresh victims on the poisoned set, on a random-noise control and on clean data.

A victim never is the surrogate: each victim k gets its own seeds (``seeds.child("victim-k")``: model
initialisation, batch order, augmentation), and the control arm reuses exactly those seeds on a training
set whose same ids carry uniform noise of the same eps, so the two arms differ only in the perturbations.
The optional clean arm (same seeds, unpoisoned data) gives the clean-accuracy baseline. In the fine-tune
and transfer scenarios every victim starts from the same public pretrained model (see ``scenarios``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from poisonlab.attacks.poisoning.poison_set import PoisonSet
from poisonlab.attacks.poisoning.scenarios import Scenario
from poisonlab.attacks.poisoning.surrogates import build_victim_model
from poisonlab.config import ModelConfig, TrainConfig
from poisonlab.data.dataset import Dataset, Splits
from poisonlab.metrics.intervals import Proportion
from poisonlab.rng import SeedTree
from poisonlab.training.evaluate import evaluate, predict_logits
from poisonlab.training.hooks import TrainingHook
from poisonlab.training.trainer import Trainer

ARMS = ("poisoned", "control", "clean")


@dataclass(frozen=True)
class VictimResult:
    """One retrained victim: its predictions on the targets and clean accuracy on the rest of the test set."""

    arm: str
    victim: int
    target_ids: list[int]
    target_predictions: list[int]
    successes: list[bool]
    clean_accuracy: float
    adv_margins: list[float] | None = None  # logit(adv) - max other logit per target: > 0 is a success

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def random_noise_control(poison_set: PoisonSet, base: Dataset, generator: torch.Generator) -> PoisonSet:
    """Uniform noise in [-eps, eps] at the same ids (projected onto the [0, 1] box): the control arm."""
    x = base.images[base.positions_of(poison_set.poison_ids)].cpu()
    noise = (torch.rand(poison_set.deltas.shape, generator=generator) * 2 - 1) * poison_set.eps
    return poison_set.with_deltas(poison_set.linf.project(noise, x), control="uniform-noise")


def train_victim(
    train: Dataset,
    targets: Dataset,
    clean_test: Dataset,
    adv_class: int,
    model: ModelConfig,
    recipe: TrainConfig,
    seeds: SeedTree,
    stats_from: Dataset,
    device: torch.device | str = "cpu",
    progress: bool = False,
    scenario: Scenario | None = None,
    hooks: Sequence[TrainingHook] = (),
) -> tuple[list[int], list[bool], float, list[float]]:
    """Train one victim on ``train`` (fresh, or from the scenario's pretrained model); return target
    predictions, success flags, clean accuracy and the targets' adversarial margins. ``hooks`` (a defense,
    say) run after the scenario's own hooks."""
    net = build_victim_model(model, stats_from, seeds, device)
    all_hooks = [*(scenario or Scenario()).prepare(net, seeds), *hooks]
    Trainer(net, train, recipe, seeds, hooks=all_hooks, progress=progress).fit()
    logits = predict_logits(net, targets.to(device)).cpu()
    preds = logits.argmax(1).tolist()
    acc = evaluate(net, clean_test.to(device))["accuracy"]
    return preds, [p == adv_class for p in preds], acc, adv_margin(logits, adv_class).tolist()


def adv_margin(logits: torch.Tensor, adv_class: int) -> torch.Tensor:
    """``z_adv - max_{j != adv} z_j`` per row: how far the target is from (or past) the adversarial class."""
    others = logits.clone()
    others[:, adv_class] = float("-inf")
    return logits[:, adv_class] - others.max(1).values


def evaluate_poisons(
    poison_set: PoisonSet,
    base_splits: Splits,
    model_config: ModelConfig,
    recipe: TrainConfig,
    victims: int,
    seeds: SeedTree,
    control: bool = True,
    device: torch.device | str = "cpu",
    completed: Mapping[tuple[str, int], VictimResult] | None = None,
    on_result: Callable[[VictimResult], None] | None = None,
    progress: bool = False,
    clean: bool = False,
    scenario: Scenario | None = None,
) -> dict[str, Any]:
    """Retrain ``victims`` fresh models on the poisoned view (and, with ``control``, on the noise control;
    with ``clean``, on the unpoisoned training set).

    Args:
        poison_set: the poisons; its budget is re-checked against ``base_splits.train``.
        base_splits: the clean dataset; targets are taken from its test split by id and excluded from the
            clean-accuracy set (as in the reference).
        model_config / recipe: the victim's architecture and training recipe.
        victims: number of victims per arm (victim k uses ``seeds.child(f"victim-{k}")``).
        seeds: seed tree of the evaluation; the control noise comes from its "control-noise" generator.
        completed: results already known (e.g. from the result store), keyed by (arm, k): not retrained.
        on_result: called with every newly computed result (to store it before the next victim starts).
        clean: also train each victim seed on the clean data (the clean-accuracy baseline).
        scenario: how victims start (default from scratch).

    Returns:
        ``{"results": [...], "summary": {arm: {"success": Proportion dict, "clean_accuracy": mean}}}``.
    """
    train = base_splits.train
    test = base_splits.test
    target_pos = test.positions_of(poison_set.target_ids)
    targets = test.subset(target_pos)
    keep = torch.ones(len(test), dtype=torch.bool)
    keep[target_pos.cpu()] = False
    clean_test = test.subset(torch.nonzero(keep).flatten())
    views = {"poisoned": poison_set.to_view(train).materialize()}
    if control:
        noise = random_noise_control(poison_set, train, seeds.generator("control-noise"))
        views["control"] = noise.to_view(train).materialize()
    if clean:
        views["clean"] = train
    done = dict(completed or {})
    results: list[VictimResult] = []
    for k in range(victims):
        for arm, data in views.items():
            if (arm, k) not in done:
                preds, hits, acc, margins = train_victim(
                    data, targets, clean_test, poison_set.adv_class, model_config, recipe,
                    seeds.child(f"victim-{k}"), train, device, progress, scenario,
                )  # fmt: skip
                done[(arm, k)] = VictimResult(arm, k, poison_set.target_ids.tolist(), preds, hits, acc, margins)
                if on_result is not None:
                    on_result(done[(arm, k)])
            results.append(done[(arm, k)])
    return {"results": [r.as_dict() for r in results], "summary": summarize(results)}


def summarize(results: list[VictimResult]) -> dict[str, Any]:
    """Per arm: pooled success over (victim, target) pairs with a Wilson 95% interval, mean clean accuracy."""
    out: dict[str, Any] = {}
    for arm in ARMS:
        rows = [r for r in results if r.arm == arm]
        if not rows:
            continue
        prop = Proportion(sum(sum(r.successes) for r in rows), sum(len(r.successes) for r in rows))
        out[arm] = {
            "success": prop.as_dict(),
            "clean_accuracy": sum(r.clean_accuracy for r in rows) / len(rows),
            "victims": len(rows),
            "mean_adv_margin": _mean([m for r in rows for m in (r.adv_margins or [])]),
        }
    return out


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None
