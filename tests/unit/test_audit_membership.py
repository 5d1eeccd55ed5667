"""The membership probe under DP-SGD: the epsilon it reports is the one the DP-SGD hook's ledger records."""

from __future__ import annotations

import torch

from poisonlab.config import ExperimentConfig, TrainConfig, build
from poisonlab.data import Dataset
from poisonlab.experiments.audit.defenses import defense_hooks, preset
from poisonlab.experiments.audit.probe_membership import dp_epsilon
from poisonlab.models.build import build_model
from poisonlab.rng import SeedTree
from poisonlab.training.trainer import Trainer


def test_dp_epsilon_equals_the_hooks_ledger_after_training(digits_small: Dataset) -> None:
    recipe = TrainConfig(epochs=2, batch_size=50, lr=0.05)
    config = build(ExperimentConfig, {"train": recipe.model_dump(mode="json")})
    sizes = [130, 170]
    got = dp_epsilon(config, sizes, 1e-5, 1.1)
    ledgers = []
    for n in sizes:
        data = digits_small.subset(torch.arange(n))
        seeds = SeedTree(n)
        net = build_model("mlp", data.shape, data.num_classes, seeds.generator("init"), 16, "none")
        (hook,) = defense_hooks(preset("dp-sgd"), data.num_classes, seeds)
        Trainer(net, data, recipe, seeds, hooks=[hook]).fit()
        ledgers.append(hook.epsilon(1e-5))
    assert got == max(ledgers)
    assert ledgers[0] > ledgers[1]  # the smaller set has the larger sampling rate: the reported worst case
