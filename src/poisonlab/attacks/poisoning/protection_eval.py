"""Does the protection work? Train fresh victims of several architectures on the protected release, on random
noise of the same budget at the same ids, and on the clean data, and compare their clean test accuracy.

Victim k of every arm and architecture uses the same seeds (``seeds.child("<arch>/victim-k")``: initialisation,
batch order, augmentation), so the arms differ only in the training images; differences are paired over seeds
and reported with Student-t intervals. A defense (a Trainer hook from ``poisonlab.defenses``) can be applied
to every arm: then the question is whether a victim that uses it still learns from the protected data.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from poisonlab.attacks.poisoning.evaluate import random_noise_control
from poisonlab.attacks.poisoning.poison_set import PoisonSet
from poisonlab.attacks.poisoning.surrogates import build_victim_model
from poisonlab.config import ModelConfig, TrainConfig
from poisonlab.data.dataset import Splits
from poisonlab.defenses.registry import build_defense
from poisonlab.errors import ConfigError
from poisonlab.metrics.intervals import t_interval
from poisonlab.rng import SeedTree
from poisonlab.training.evaluate import evaluate
from poisonlab.training.trainer import Trainer

ARMS = ("protected", "noise", "clean")


@dataclass(frozen=True)
class VictimSpec:
    """A victim architecture and its learning rate: written ``name[:width][@lr]``, e.g. ``convnet:16@0.01``."""

    name: str
    width: int | None = None
    lr: float | None = None

    @property
    def label(self) -> str:
        return self.name + (f":{self.width}" if self.width else "") + (f"@{self.lr:g}" if self.lr else "")

    @staticmethod
    def parse(text: str) -> VictimSpec:
        head, _, lr = text.strip().partition("@")
        name, _, width = head.partition(":")
        try:
            spec = VictimSpec(name, int(width) if width else None, float(lr) if lr else None)
        except ValueError:
            raise ConfigError(f"--models: expected name[:width][@lr] such as convnet:16@0.01, got {text!r}") from None
        if not name or (spec.width is not None and spec.width < 1) or (spec.lr is not None and spec.lr <= 0):
            raise ConfigError(f"--models: expected name[:width][@lr] with positive width and lr, got {text!r}")
        return spec


@dataclass(frozen=True)
class ProtectionVictim:
    """One retrained victim: its architecture, arm, seed index and clean test accuracy."""

    model: str
    arm: str
    victim: int
    accuracy: float
    defense: str = "none"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def evaluate_protection(
    protected: PoisonSet,
    splits: Splits,
    models: Sequence[VictimSpec],
    norm: str,
    recipe: TrainConfig,
    victims: int,
    seeds: SeedTree,
    arms: Sequence[str] = ARMS,
    defense: str | None = None,
    defense_params: Mapping[str, Any] | None = None,
    device: torch.device | str = "cpu",
    completed: Mapping[tuple[str, str, int], ProtectionVictim] | None = None,
    on_result: Callable[[ProtectionVictim], None] | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Train ``victims`` victims per (architecture, arm) and measure clean test accuracy.

    Args:
        protected: the protective deltas; the budget is re-checked against ``splits.train``.
        splits: the clean dataset (victims are scored on its whole test split).
        models: victim architectures (``VictimSpec``); each uses ``recipe`` with its own ``lr`` if given.
        norm: normalisation layers of the victims ("batch", "group", "none").
        recipe: the victims' training recipe.
        victims: seeds per (architecture, arm).
        seeds: the evaluation's seed tree; the noise control draws from its "noise" generator.
        arms: any of "protected", "noise" (uniform noise in [-eps, eps] at the same ids), "clean".
        defense: name of a registered defense applied to every arm's victims (``build_defense``).
        defense_params: the defense's own parameters.
        completed: results already known, keyed by (model label, arm, k): not retrained.
        on_result: called with each newly computed result (to store it before the next victim starts).

    Returns:
        ``{"results": [...], "summary": summarize_protection(...)}``.
    """
    unknown = sorted(set(arms) - set(ARMS))
    if unknown:
        raise ConfigError(f"arms: unknown arm(s) {unknown}, expected some of {list(ARMS)}")
    train, test = splits.train, splits.test.to(device)
    views = {}
    for arm in arms:
        if arm == "protected":
            views[arm] = protected.to_view(train).materialize()
        elif arm == "noise":
            views[arm] = random_noise_control(protected, train, seeds.generator("noise")).to_view(train).materialize()
        else:
            views[arm] = train
    done = dict(completed or {})
    results = []
    for spec in models:
        model_cfg = ModelConfig(name=spec.name, width=spec.width, norm=norm)
        own = recipe if spec.lr is None else recipe.model_copy(update={"lr": spec.lr})
        for k in range(victims):
            for arm, data in views.items():
                key = (spec.label, arm, k)
                if key not in done:
                    sub = seeds.child(f"{spec.label}/victim-{k}")
                    net = build_victim_model(model_cfg, train, sub, device)
                    hooks = [] if defense is None else [_defense(defense, train.num_classes, sub, defense_params)]
                    Trainer(net, data, own, sub, hooks=hooks, progress=progress).fit()
                    acc = evaluate(net, test)["accuracy"]
                    done[key] = ProtectionVictim(spec.label, arm, k, float(acc), defense or "none")
                    if on_result is not None:
                        on_result(done[key])
                results.append(done[key])
    return {"results": [r.as_dict() for r in results], "summary": summarize_protection(results)}


def _defense(name: str, num_classes: int, seeds: SeedTree, params: Mapping[str, Any] | None) -> Any:
    return build_defense(name, num_classes, seeds.generator(f"defense-{name}"), **dict(params or {}))


def summarize_protection(results: Sequence[ProtectionVictim]) -> dict[str, Any]:
    """Per architecture: mean accuracy per arm with a t interval over seeds, and the paired drops
    ``clean - protected`` and ``clean - noise`` (same seed) with t intervals."""
    out: dict[str, Any] = {}
    for model in dict.fromkeys(r.model for r in results):
        rows = [r for r in results if r.model == model]
        by_arm = {arm: {r.victim: r.accuracy for r in rows if r.arm == arm} for arm in ARMS}
        entry: dict[str, Any] = {}
        for arm, accs in by_arm.items():
            if accs:
                entry[arm] = _interval(list(accs.values()))
        for arm in ("protected", "noise"):
            pairs = sorted(set(by_arm["clean"]) & set(by_arm[arm]))
            if pairs:
                entry[f"drop_{arm}"] = _interval([by_arm["clean"][k] - by_arm[arm][k] for k in pairs])
        out[model] = entry
    return out


def _interval(values: list[float]) -> dict[str, float]:
    mean, lo, hi = t_interval(values)
    return {"mean": mean, "lo": lo, "hi": hi, "n": len(values)}
