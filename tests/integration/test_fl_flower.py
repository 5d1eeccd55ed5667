"""The same federated rounds on Flower's simulation engine and in-process: identical global models."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from poisonlab.fl.config import load_fl_config
from poisonlab.fl.engine import RoundEngine
from poisonlab.fl.experiment import FLSetup, make_aggregator

pytestmark = [  # runs in CI: make test installs flwr and ray (dev extras)
    pytest.mark.skipif(
        importlib.util.find_spec("flwr") is None or importlib.util.find_spec("ray") is None,
        reason="Flower adapters need the optional extra 'fl' (flwr) and ray; not installed",
    ),
]


def test_flower_simulation_equals_the_in_process_engine() -> None:
    from poisonlab.fl.flower.simulation import run_flower_rounds

    cfg = load_fl_config(
        overrides=[
            "data.name=digits",
            "model.name=mlp",
            "model.width=16",
            "fl.clients=6",
            "fl.per_round=3",
            "fl.local.batch_size=16",
            "attack.kind=model-replacement",
            "attack.samples=64",
            "attack.epochs=2",
            "aggregator.name=median",
        ]
    )
    setup = FLSetup(cfg)
    seeds = setup.seeds.child("flower-test")
    attacker = setup.attacker(None)
    g_flower, hist = run_flower_rounds(setup, make_aggregator(cfg, None), 3, seeds, attacker=attacker, attack_round=2)
    engine = RoundEngine(
        setup.local_trainer("sequential"),
        setup.federation,
        make_aggregator(cfg, None),
        seeds,
        attackers={2: [setup.attacker(None)]},
        hyperparameters=setup.hyperparameters(),
    )
    g_engine, ehist = engine.run(setup.initial.clone(), 3)
    assert [h["participants"] for h in hist] == [h["participants"] for h in ehist]
    assert hist[1]["participants"][0] == 0  # the malicious Flower client took part in round 2
    assert torch.equal(g_flower, g_engine)
