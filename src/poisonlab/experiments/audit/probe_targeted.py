"""Audit probe "targeted": clean-label targeted poisoning of one test image, under each defense.

The attacker crafts poisons once per trial (on the public pretrained model of the transfer scenario by
default: the setting where clean-label poisoning of mnist5k succeeds, see benchmarks/RESULTS.md); the
defender then trains its victims on them with its defense, beside a random-noise control of the same budget
with the same victim seeds.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from poisonlab.attacks.poisoning.config import PoisoningExperimentConfig
from poisonlab.attacks.poisoning.evaluate import random_noise_control, train_victim
from poisonlab.attacks.poisoning.experiment import POISONS, craft_experiment, load_scenario
from poisonlab.attacks.poisoning.poison_set import PoisonSet
from poisonlab.config import build
from poisonlab.experiments.audit.context import TrialContext
from poisonlab.experiments.audit.defenses import defense_hooks
from poisonlab.experiments.audit.probes import Headline, Probe, register
from poisonlab.rng import SeedTree

_CRAFT = {"eps": 128 / 255, "budget": 0.01, "restarts": 1, "augment": False}


class TargetedProbe(Probe):
    """Targeted clean-label poisoning (Poison Frogs feature collision, or Witches' Brew gradient matching):
    success = a victim classifies the target test image as the adversarial class.

    Threat model: attacker perturbs 1% of the training images (true labels kept) within an l-inf ball of
    128/255; knows the architecture and the public pretrained model, not the victim's seed.
    """

    name = "targeted"
    title = "Targeted clean-label poisoning"
    threat = "attacker perturbs 1% of training images within l-inf 128/255, labels untouched"
    headline = Headline("target_rate", "target misclassified as adversarial class", "proportion", "hits", "victims")
    fn = "poisonlab.experiments.audit.probe_targeted:run"
    plans = {
        "quick": {
            "trials": 2,
            "victims": 1,
            "recipe": "feature-collision",
            "scenario": "transfer",
            "steps": 100,
            "defenses": ("none",),
        },
        "standard": {"trials": 6, "victims": 2, "recipe": "feature-collision", "scenario": "transfer", "steps": 250},
        "full": {"trials": 10, "victims": 2, "recipe": "gradient-matching", "scenario": "transfer", "steps": 250},
    }
    seconds = {"quick": 110.0, "standard": 200.0, "full": 600.0}

    picture = "poisons_png"

    def caption(self, row: dict[str, Any]) -> str:
        meta = row["meta"]
        return (
            f"poisons of trial {row['key']} (clean | poisoned | amplified difference); target ids "
            f"{meta.get('target_ids')} -> class {meta.get('adv_class')}"
        )

    def supports(self, defense: Any) -> bool:
        return defense.filter is None  # filters are measured against the backdoor probe


def pretrained_folder(model_change: dict[str, Any]) -> str:
    """The shared public model of the transfer scenario: one per model variant, since a defense that changes the
    model (DP-SGD: group norm) needs its own pretrained network, e.g. ``pretrained-norm-group``."""
    return "-".join(["pretrained", *(f"{k}-{v}" for k, v in sorted(model_change.items()))])


def run(spec: dict[str, Any]) -> dict[str, Any]:
    ctx = TrialContext.from_spec(spec)
    t0 = time.perf_counter()
    p = ctx.params
    craft = {**_CRAFT, "recipe": p["recipe"], "scenario": p["scenario"], "steps": p["steps"]}
    # the attacker's recipe is the defended one: it knows the architecture the victim trains
    pconf = build(PoisoningExperimentConfig, {**ctx.config.model_dump(mode="json"), "seed": ctx.seed, "poison": craft})
    folder = Path(ctx.workdir) / "targeted" / f"{ctx.defense.name}-seed{ctx.seed}"
    shared = Path(ctx.workdir) / "shared" / pretrained_folder(ctx.defense.model)
    crafted = craft_experiment(pconf, folder, pretrained_dir=shared)
    splits = ctx.splits
    ps = PoisonSet.load(folder / POISONS, splits.train)
    scenario = load_scenario(pconf, splits, ctx.device, shared, None, False)
    test = splits.test
    target_pos = test.positions_of(ps.target_ids)
    keep = torch.ones(len(test), dtype=torch.bool)
    keep[target_pos.cpu()] = False
    targets, clean_test = test.subset(target_pos), test.subset(keep.nonzero().flatten())
    eval_seeds = SeedTree(ctx.seed).child("evaluate")
    noise = random_noise_control(ps, splits.train, eval_seeds.generator("control-noise"))
    views = {"poisoned": ps.to_view(splits.train).materialize(), "control": noise.to_view(splits.train).materialize()}
    out: dict[str, list[Any]] = {"poisoned": [], "control": []}
    for k in range(int(p["victims"])):
        vseeds = eval_seeds.child(f"victim-{k}")
        for arm, data in views.items():
            hooks = defense_hooks(ctx.defense, data.num_classes, vseeds)
            res = train_victim(
                data, targets, clean_test, ps.adv_class, pconf.model, pconf.train, vseeds, splits.train,
                ctx.device, False, scenario, hooks,
            )  # fmt: skip
            out[arm].append(res)
    hits = sum(sum(r[1]) for r in out["poisoned"])
    n = sum(len(r[1]) for r in out["poisoned"])
    metrics = {
        "target_rate": hits / n,
        "hits": hits,
        "victims": n,
        "control_hits": sum(sum(r[1]) for r in out["control"]),
        "clean_accuracy": sum(r[2] for r in out["poisoned"]) / len(out["poisoned"]),
        "control_accuracy": sum(r[2] for r in out["control"]) / len(out["control"]),
        "adv_margin": sum(m for r in out["poisoned"] for m in r[3]) / n,
        "craft_loss": crafted["metrics"]["best_loss"],
        "seconds": time.perf_counter() - t0,
    }
    meta = ctx.meta(
        target_ids=ps.target_ids.tolist(),
        adv_class=ps.adv_class,
        recipe=p["recipe"],
        scenario=p["scenario"],
        eps=_CRAFT["eps"],
        poisons_png=str(folder / "report" / "poisons.png"),
    )
    return {"metrics": metrics, "meta": meta}


register(TargetedProbe())
