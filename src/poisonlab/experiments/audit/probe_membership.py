"""Audit probe "membership": LiRA membership inference on the recipe, with and without Truth Serum poisons."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from poisonlab.experiments.audit.context import TrialContext
from poisonlab.experiments.audit.defenses import defense_hooks
from poisonlab.experiments.audit.probes import Headline, Probe, register

ATTACK = "lira-online-fixed"


class MembershipProbe(Probe):
    """LiRA (Carlini et al. 2022) against models trained with the recipe on random halves of the data, pooled
    over target-model rotations; and Truth Serum (Tramer et al., CCS 2022): the attacker adds ``replicas``
    mislabelled copies of each of ``targets`` points before training, which makes their membership stand out.
    Headline: the targets' TPR at 1% FPR with poisoning; the same targets unpoisoned beside it.

    Threat model: black-box query access to the trained model's logits; the attacker can train shadow models on
    data from the same distribution and (Truth Serum) add a few mislabelled samples to the training set.
    Under a training defense (mixup, DP-SGD, ...) every model, target and shadow, trains with it: the attacker
    knows the victim's recipe, defense included (the strongest, standard assumption).
    """

    name = "membership"
    title = "Membership inference (LiRA) and Truth Serum poisoning"
    threat = "attacker queries the model's logits and adds mislabelled copies of its targets to the training set"
    headline = Headline("poisoned_tpr_1pct", "Truth Serum targets' TPR at 1% FPR")
    fn = "poisonlab.experiments.audit.probe_membership:run"
    plans = {
        # 2 x N models per trial (clean and poisoned arms): quick measures the undefended recipe only, standard
        # adds one augmentation and DP-SGD, full every training defense
        "quick": {"trials": 1, "shadows": 4, "targets": 100, "replicas": 8, "width": 8, "defenses": ("none",)},
        "standard": {
            "trials": 1,
            "shadows": 16,
            "targets": 250,
            "replicas": 8,
            "width": 8,
            "defenses": ("none", "mixup", "dp-sgd"),
        },
        "full": {"trials": 3, "shadows": 16, "targets": 250, "replicas": 8, "width": 8},
    }
    seconds = {"quick": 220.0, "standard": 1000.0, "full": 1000.0}

    def supports(self, defense: Any) -> bool:
        return defense.filter is None  # a filter's two-stage training is measured against the backdoor probe

    picture = "roc_png"

    def caption(self, row: dict[str, Any]) -> str:
        return f"ROC curves (log-log) of trial {row['key']}"


def _get(metrics: dict[str, Any], arm: str, subset: str, key: str) -> float:
    m = metrics[arm][subset][ATTACK]
    return float(m["tpr_at_fpr"][key]) if key != "auc" else float(m["auc"])


def dp_epsilon(config: Any, sizes: list[int], delta: float, noise_multiplier: float) -> float:
    """The largest epsilon over the models of a DP-SGD run: each trains ``epochs`` passes of the Trainer's
    batches over its own training set (size in ``sizes``) with q = batch size / size."""
    from poisonlab.defenses.dp.accounting import epsilon, sample_rate_for
    from poisonlab.training.trainer import epoch_batches

    recipe = config.train
    return max(
        epsilon(
            sample_rate_for(recipe.batch_size, n),
            noise_multiplier,
            recipe.epochs * len(epoch_batches(n, recipe.batch_size, recipe.drop_last)),
            delta,
        )
        for n in sorted(set(sizes))
    )


def run(spec: dict[str, Any]) -> dict[str, Any]:
    from functools import partial

    from poisonlab.attacks.inference.mia_config import MiaExperimentConfig
    from poisonlab.attacks.inference.mia_experiment import mia_experiment
    from poisonlab.config import build

    ctx = TrialContext.from_spec(spec)
    t0 = time.perf_counter()
    p = ctx.params
    data = ctx.config.model_dump(mode="json")
    data["seed"] = ctx.seed
    data["model"]["width"] = p["width"]
    data["mia"] = {
        "shadows": p["shadows"],
        "poison_targets": p["targets"],
        "replicas": p["replicas"],
        "k_at_once": 1,
        "strategy": "sequential",
        "n_boot": 200,
    }
    config = build(MiaExperimentConfig, data)
    defense = ctx.defense
    name = "" if defense.name == "none" else defense.name
    folder = Path(ctx.workdir) / "membership" / (f"seed{ctx.seed}" if not name else f"{name}-seed{ctx.seed}")
    hooks = partial(defense_hooks, defense) if defense.hook is not None else None
    row = mia_experiment(config, folder, defense=name if hooks is not None else "", hooks=hooks)
    m = row["metrics"]
    s = row["summary"]
    metrics = {
        "all_tpr_0.1pct": _get(m, "clean", "all", "0.001"),
        "all_tpr_1pct": _get(m, "clean", "all", "0.01"),
        "all_auc": _get(m, "clean", "all", "auc"),
        "clean_tpr_1pct": _get(m, "clean", "targets", "0.01"),
        "clean_auc": _get(m, "clean", "targets", "auc"),
        "poisoned_tpr_1pct": _get(m, "poisoned", "targets", "0.01"),
        "poisoned_auc": _get(m, "poisoned", "targets", "auc"),
        "global_tpr_0.1pct": float(m["clean"]["all"]["global"]["tpr_at_fpr"]["0.001"]),
        "accuracy_cost": float(s["accuracy_cost"]["mean"]),
        "clean_model_accuracy": float(s["accuracy_clean"]["mean"]),
        "seconds": time.perf_counter() - t0,
    }
    if defense.hook == "dp-sgd":
        sizes = [n for arm in row["train_sizes"].values() for n in arm]
        metrics["epsilon"] = dp_epsilon(config, sizes, 1e-5, float(defense.params["noise_multiplier"]))
        metrics["delta"] = 1e-5
    roc = next(iter(sorted(folder.glob("**/*roc*.png"))), None)
    return {"metrics": metrics, "meta": ctx.meta(roc_png=str(roc) if roc else "", shadows=p["shadows"])}


register(MembershipProbe())
