"""Audit probe "backdoor": BadNets patch backdoor by dirty-label data poisoning, under each defense."""

from __future__ import annotations

import time
from typing import Any

import torch

from poisonlab.attacks.backdoor.config import BackdoorConfig
from poisonlab.attacks.backdoor.poisoning import DirtyLabelBackdoor
from poisonlab.attacks.backdoor.synthesizers import build_synthesizer, build_trigger
from poisonlab.budget import PoisonBudget
from poisonlab.experiments.audit.context import TrialContext
from poisonlab.experiments.audit.defenses import train_defended
from poisonlab.experiments.audit.probes import Headline, Probe, register
from poisonlab.metrics.backdoor import backdoor_accuracy
from poisonlab.rng import SeedTree
from poisonlab.training.evaluate import evaluate


class BackdoorProbe(Probe):
    """BadNets (Gu et al. 2017): a 3x3 checkerboard patch stamped on a fraction of non-target training images,
    relabelled to the target class; success = triggered non-target test images classified as the target.

    Threat model: attacker adds a trigger and flips the labels of <= 5% of the training set; no access to the
    model or the training code.
    """

    name = "backdoor"
    title = "Patch backdoor (BadNets, dirty label)"
    threat = "attacker relabels and stamps a 3x3 patch on 5% of the training set"
    headline = Headline("backdoor_rate", "backdoor success (ASR)", "proportion", "backdoor_successes", "backdoor_n")
    fn = "poisonlab.experiments.audit.probe_backdoor:run"
    plans = {
        "quick": {"trials": 1, "poison_fraction": 0.05, "target_class": 8},
        "standard": {"trials": 3, "poison_fraction": 0.05, "target_class": 8},
        "full": {"trials": 5, "poison_fraction": 0.05, "target_class": 8},
    }
    seconds = {"quick": 75.0, "standard": 75.0, "full": 75.0}

    def figures(self, entry: dict[str, Any], workdir: Any) -> list[tuple[str, bytes]]:
        """Eight training images before and after the trigger is stamped (what the poisons look like)."""
        row = next((r for d in entry["defenses"].values() for r in d["rows"]), None)
        if row is None:
            return []
        from poisonlab.config import ExperimentConfig, build
        from poisonlab.data.registry import load_dataset
        from poisonlab.report.plots import image_rows_png

        config = build(ExperimentConfig, row["meta"]["base_config"])
        params = self.plans["quick"]
        cfg = BackdoorConfig(poison_fraction=params["poison_fraction"], target_class=params["target_class"])
        train = load_dataset(config.data.name, config.data.root).train
        trigger = build_trigger(cfg, train.shape, SeedTree(row["seed"]).child("backdoor").generator("trigger"))
        x = train.images[:8].cpu()
        return [
            (
                f"clean (top) and triggered (bottom) training images; triggered ones are labelled {cfg.target_class}",
                image_rows_png([x, trigger.apply(x)], ["clean", "triggered"]),
            )
        ]


def run(spec: dict[str, Any]) -> dict[str, Any]:
    ctx = TrialContext.from_spec(spec)
    t0 = time.perf_counter()
    p = ctx.params
    cfg = BackdoorConfig(poison_fraction=p["poison_fraction"], target_class=p["target_class"])
    seeds = SeedTree(ctx.seed)
    atk = seeds.child("backdoor")
    train = ctx.splits.train
    trigger = build_trigger(cfg, train.shape, atk.generator("trigger"))
    attack = DirtyLabelBackdoor(trigger, cfg.target_class, PoisonBudget(fraction=cfg.poison_fraction))
    poisoned = attack.apply(train, atk.generator("poison"))
    poison_ids = poisoned.delta_ids.cpu()
    model, info = train_defended(ctx.model_factory(), poisoned.materialize(), ctx.config, ctx.defense, seeds)
    test = ctx.splits.test.to(ctx.device)
    synth = build_synthesizer(cfg, trigger, train.num_classes)
    x, y_star, eligible = synth.test_inputs(test.images, test.labels, atk.generator("eval"))
    hit = backdoor_accuracy(model, x, y_star, eligible)
    metrics: dict[str, Any] = {
        "backdoor_rate": hit.rate,
        "backdoor_successes": hit.successes,
        "backdoor_n": hit.n,
        "clean_accuracy": evaluate(model, test)["accuracy"],
        "poisons": len(poison_ids),
        "seconds": time.perf_counter() - t0,
    }
    metrics.update({k: v for k, v in info.items() if k in ("epsilon", "delta")})
    if "removed_ids" in info:
        removed = torch.as_tensor(info["removed_ids"], dtype=torch.long)
        caught = int(torch.isin(removed, poison_ids).sum())
        metrics.update(
            removed=len(removed),
            filter_precision=caught / max(len(removed), 1),
            filter_recall=caught / max(len(poison_ids), 1),
        )
    meta = ctx.meta(seeds=seeds.record(), trigger=cfg.trigger, base_config=ctx.base.model_dump(mode="json"))
    return {"metrics": metrics, "meta": meta}


register(BackdoorProbe())
