"""The defenses an audit measures: named presets of a training hook, a data filter, or a model change.

A preset turns the user's recipe into the defended one. Hooks come from
:data:`poisonlab.defenses.DEFENSES` (built fresh for every victim from the victim's own seed tree); filters
from :data:`poisonlab.defenses.filtering.FILTERS` (the defender trains once on the data it was given,
removes what the filter flags, and retrains from scratch). DP-SGD cannot run with batch norm, so its presets
switch the model to group norm and say so in the report.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from poisonlab.config import ExperimentConfig
from poisonlab.data.dataset import Dataset
from poisonlab.errors import ConfigError
from poisonlab.rng import SeedTree
from poisonlab.training.hooks import TrainingHook
from poisonlab.training.trainer import Trainer


@dataclass(frozen=True)
class DefensePreset:
    """One defended variant of the user's recipe.

    Args:
        name: the preset's name in ``--defenses``.
        describe: one line for the report.
        hook: a DEFENSES name, or None.
        params: the hook's (or filter's) parameters.
        filter: a FILTERS name, or None.
        model: ModelConfig fields to change (e.g. ``{"norm": "group"}`` for DP-SGD).
        cost: training time relative to the undefended recipe, for the ETA (measured for one epoch of the
            default recipe on one CPU thread, 2026-11-27: augmentations 0.9-1.1x, DP-SGD 1.3-1.5x, adversarial
            poisoning 2.6x; a filter trains twice).
    """

    name: str
    describe: str
    hook: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    filter: str | None = None
    model: dict[str, Any] = field(default_factory=dict)
    cost: float = 1.0

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "hook": self.hook, "params": self.params, "filter": self.filter, "model": self.model}


PRESETS: dict[str, DefensePreset] = {
    p.name: p
    for p in (
        DefensePreset("none", "the user's recipe, undefended"),
        DefensePreset("mixup", "2-way mixup, alpha 1 (Borgnia et al. 2021)", "mixup", {"alpha": 1.0, "k": 2}),
        DefensePreset("cutmix", "CutMix, alpha 1", "cutmix", {}),
        DefensePreset("cutout", "Cutout", "cutout", {}),
        DefensePreset("maxup", "MaxUp over 4 augmented copies", "maxup", {}),
        DefensePreset(
            "dp-sgd",
            "DP-SGD, sigma 1.1, C 1, delta 1e-5 (group norm instead of batch norm)",
            "dp-sgd",
            {"noise_multiplier": 1.1, "max_grad_norm": 1.0},
            model={"norm": "group"},
            cost=1.5,
        ),
        DefensePreset(
            "dp-sgd-weak",
            "DP-SGD, sigma 0.5, C 1, delta 1e-5 (group norm): a larger epsilon",
            "dp-sgd",
            {"noise_multiplier": 0.5, "max_grad_norm": 1.0},
            model={"norm": "group"},
            cost=1.5,
        ),
        DefensePreset("dp-instahide", "DP-InstaHide: 2-way mixup + Laplace noise", "dp-instahide", {}),
        DefensePreset(
            "adversarial",
            "adversarial poisoning during training (PGD inner attack, half of each batch)",
            "adversarial",
            {"inner": "pgd"},
            cost=2.6,
        ),
        DefensePreset(
            "spectral",
            "spectral-signature filter (assumed budget 1%: 1.5% of the set removed from every class), then retrain",
            filter="spectral",
            params={"budget": 0.01},
            cost=2.1,
        ),
        DefensePreset(
            "activation-clustering",
            "activation-clustering filter, then retrain",
            filter="activation-clustering",
            cost=2.1,
        ),
        DefensePreset(
            "deep-knn",
            "deep k-NN filter (assumed budget 1%), then retrain",
            filter="deep-knn",
            params={"budget": 0.01},
            cost=2.1,
        ),
    )
}


def preset(name: str) -> DefensePreset:
    if name not in PRESETS:
        raise ConfigError(f"audit.defenses: unknown defense {name!r}; expected one of {sorted(PRESETS)}")
    return PRESETS[name]


def defended_config(config: ExperimentConfig, defense: DefensePreset) -> ExperimentConfig:
    """The victim's config under ``defense`` (only the model section may change)."""
    if not defense.model:
        return config
    return config.model_copy(update={"model": config.model.model_copy(update=defense.model)})


def defense_hooks(defense: DefensePreset, num_classes: int, seeds: SeedTree) -> list[TrainingHook]:
    """The defense's training hooks for one victim, seeded from the victim's tree."""
    if defense.hook is None:
        return []
    import poisonlab.defenses  # noqa: F401  (registers the hooks)
    from poisonlab.defenses.registry import build_defense

    return [build_defense(defense.hook, num_classes, seeds.child("defense").generator(defense.hook), **defense.params)]


def train_defended(
    model_factory: Any,
    train: Dataset,
    config: ExperimentConfig,
    defense: DefensePreset,
    seeds: SeedTree,
    extra_hooks: list[TrainingHook] | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Train one victim under ``defense``; returns the model and what the defense reports.

    Args:
        model_factory: ``seeds -> fresh model`` (the defended architecture).
        train: the training set the victim receives (possibly poisoned).
        config: the defended config (recipe).
        defense: the preset.
        seeds: the victim's seed tree.
        extra_hooks: hooks that are part of the threat (e.g. a blind backdoor), applied after the defense's.

    Returns:
        (model, info): info has ``epsilon``/``delta`` for DP-SGD and ``removed_ids`` for filters.
    """
    info: dict[str, Any] = {}
    if defense.filter is not None:
        from poisonlab.defenses.filtering import FILTERS  # noqa: F401  (registers the filters)
        from poisonlab.defenses.filtering.apply import apply_filter
        from poisonlab.defenses.filtering.registry import build_filter

        first = model_factory(seeds.child("filter-model"))
        Trainer(first, train, config.train, seeds.child("filter-model"), hooks=list(extra_hooks or [])).fit()
        flt = build_filter(defense.filter, seeds.child("filter").generator("filter"), **defense.params)
        removed = flt.select(first, train)
        info["removed_ids"] = removed.tolist()
        train = apply_filter(train, removed)
    model = model_factory(seeds)
    hooks = defense_hooks(defense, train.num_classes, seeds) + list(extra_hooks or [])
    Trainer(model, train, config.train, seeds, hooks=hooks).fit()
    for h in hooks:
        if defense.hook == "dp-sgd" and hasattr(h, "epsilon") and hasattr(h, "delta"):
            info["epsilon"] = float(h.epsilon())
            info["delta"] = float(h.delta)
    return model, info


def poison_mask(train: Dataset, poison_ids: torch.Tensor | list[int]) -> torch.Tensor:
    ids = torch.as_tensor(poison_ids, dtype=torch.long)
    return torch.isin(train.ids.cpu(), ids)
