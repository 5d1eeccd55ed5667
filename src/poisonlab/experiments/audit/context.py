"""What every audit trial starts from: the victim's config under the defense, the data, the device."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from poisonlab.config import ExperimentConfig, build
from poisonlab.data.dataset import Splits
from poisonlab.data.registry import load_dataset
from poisonlab.experiments.audit.defenses import DefensePreset, defended_config, preset
from poisonlab.experiments.job import environment, resolve_device
from poisonlab.experiments.train import build_for
from poisonlab.rng import SeedTree


@dataclass
class TrialContext:
    """A trial's inputs, rebuilt from its JSON spec in whichever process runs it."""

    base: ExperimentConfig  # the user's recipe
    config: ExperimentConfig  # the recipe under the defense
    defense: DefensePreset
    splits: Splits
    device: torch.device
    seed: int
    params: dict[str, Any]
    workdir: str

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> TrialContext:
        base = build(ExperimentConfig, spec["config"])
        defense = preset(spec["defense"])
        config = defended_config(base, defense)
        if spec.get("epochs"):
            config = config.model_copy(update={"train": config.train.model_copy(update={"epochs": spec["epochs"]})})
        splits = load_dataset(config.data.name, config.data.root)
        device = resolve_device(config.runtime)
        return cls(base, config, defense, splits, device, int(spec["seed"]), dict(spec["params"]), spec["workdir"])

    def model_factory(self) -> Any:
        def make(seeds: SeedTree) -> nn.Module:
            return build_for(self.config, self.splits, seeds, self.device)

        return make

    def meta(self, **extra: Any) -> dict[str, Any]:
        return {
            "defense": self.defense.as_dict(),
            "config_hash": self.config.config_hash(),
            "environment": environment(self.device),
            **extra,
        }
