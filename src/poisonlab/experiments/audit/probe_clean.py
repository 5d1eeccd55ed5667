"""Audit probe "clean": the recipe's own clean test accuracy under each defense (the cost side of a defense)."""

from __future__ import annotations

import time
from typing import Any

from poisonlab.experiments.audit.context import TrialContext
from poisonlab.experiments.audit.defenses import train_defended
from poisonlab.experiments.audit.probes import Headline, Probe, register
from poisonlab.rng import SeedTree
from poisonlab.training.evaluate import evaluate


class CleanProbe(Probe):
    """Train the user's recipe (under the defense) from scratch and measure clean test accuracy.

    Threat model: none; this is the baseline every attack and defense is compared with.
    """

    name = "clean"
    title = "Clean accuracy"
    threat = "no attacker: the cost of each defense in clean test accuracy"
    headline = Headline("clean_accuracy", "clean test accuracy")
    fn = "poisonlab.experiments.audit.probe_clean:run"
    plans = {"quick": {"trials": 1}, "standard": {"trials": 3}, "full": {"trials": 5}}
    seconds = {"quick": 75.0, "standard": 75.0, "full": 75.0}  # idle 2-core machine, 1 thread


def run(spec: dict[str, Any]) -> dict[str, Any]:
    ctx = TrialContext.from_spec(spec)
    t0 = time.perf_counter()
    seeds = SeedTree(ctx.seed)
    model, info = train_defended(ctx.model_factory(), ctx.splits.train, ctx.config, ctx.defense, seeds)
    test = evaluate(model, ctx.splits.test.to(ctx.device))
    metrics = {"clean_accuracy": test["accuracy"], "test_loss": test["loss"], "seconds": time.perf_counter() - t0}
    metrics.update({k: v for k, v in info.items() if k in ("epsilon", "delta")})
    if "removed_ids" in info:
        metrics["removed"] = len(info["removed_ids"])
    return {"metrics": metrics, "meta": ctx.meta(seeds=seeds.record())}


register(CleanProbe())
