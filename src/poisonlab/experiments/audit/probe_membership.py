"""Audit probe "membership": LiRA membership inference on the recipe, with and without Truth Serum poisons."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from poisonlab.experiments.audit.context import TrialContext
from poisonlab.experiments.audit.probes import Headline, Probe, register

ATTACK = "lira-online-fixed"


class MembershipProbe(Probe):
    """LiRA (Carlini et al. 2022) against models trained with the recipe on random halves of the data, pooled
    over target-model rotations; and Truth Serum (Tramer et al., CCS 2022): the attacker adds ``replicas``
    mislabelled copies of each of ``targets`` points before training, which makes their membership stand out.
    Headline: the targets' TPR at 1% FPR with poisoning; the same targets unpoisoned beside it.

    Threat model: black-box query access to the trained model's logits; the attacker can train shadow models on
    data from the same distribution and (Truth Serum) add a few mislabelled samples to the training set.
    """

    name = "membership"
    title = "Membership inference (LiRA) and Truth Serum poisoning"
    threat = "attacker queries the model's logits and adds mislabelled copies of its targets to the training set"
    headline = Headline("poisoned_tpr_1pct", "Truth Serum targets' TPR at 1% FPR")
    fn = "poisonlab.experiments.audit.probe_membership:run"
    defended = False  # shadow models are trained K at once, without training hooks
    plans = {
        "quick": {"trials": 1, "shadows": 4, "targets": 100, "replicas": 8, "width": 8},
        "standard": {"trials": 1, "shadows": 16, "targets": 250, "replicas": 8, "width": 8},
        "full": {"trials": 3, "shadows": 16, "targets": 250, "replicas": 8, "width": 8},
    }
    seconds = {"quick": 220.0, "standard": 1000.0, "full": 1000.0}

    def figures(self, entry: dict[str, Any], workdir: Any) -> list[tuple[str, bytes]]:
        for d in entry["defenses"].values():
            for row in d["rows"]:
                png = Path(row["meta"].get("roc_png", ""))
                if png.is_file():
                    return [(f"ROC curves (log-log) of trial {row['key']}", png.read_bytes())]
        return []


def _get(metrics: dict[str, Any], arm: str, subset: str, key: str) -> float:
    m = metrics[arm][subset][ATTACK]
    return float(m["tpr_at_fpr"][key]) if key != "auc" else float(m["auc"])


def run(spec: dict[str, Any]) -> dict[str, Any]:
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
    folder = Path(ctx.workdir) / "membership" / f"seed{ctx.seed}"
    row = mia_experiment(config, folder)
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
        "seconds": time.perf_counter() - t0,
    }
    roc = next(iter(sorted(folder.glob("**/*roc*.png"))), None)
    return {"metrics": metrics, "meta": ctx.meta(roc_png=str(roc) if roc else "", shadows=p["shadows"])}


register(MembershipProbe())
