"""Audit probe "federated": a backdoor by model replacement in a federated version of the recipe."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from poisonlab.experiments.audit.context import TrialContext
from poisonlab.experiments.audit.probes import Headline, Probe, register


class FederatedBackdoorProbe(Probe):
    """How to Backdoor Federated Learning (Bagdasaryan et al., AISTATS 2020): the recipe's model is trained by
    FedAvg over ``clients`` participants (Dirichlet 0.9 partition of the training split, ``per_round`` per
    round, pretrained for ``pretrain_rounds`` clean rounds); in one round a compromised participant trains on
    the pattern backdoor (plus its clean data) and scales its update by n / eta so that it replaces the
    global model. Headline: backdoor accuracy right after that round under FedAvg; the same round under the
    server's norm clipping (bound: the largest benign update norm of the last pretraining rounds) and the
    main-task change stand beside it.

    Threat model: one of the clients is compromised for one round; it knows the global model it receives,
    not the other clients' data or updates; the server aggregates updates without inspecting data.
    Batch norm cannot be federated this way, so the recipe's model runs without normalisation layers.
    """

    name = "federated"
    title = "Backdoor by model replacement in federated learning"
    threat = "one of the clients, in one round, sends a scaled update trained on a backdoor"
    headline = Headline(
        "backdoor_rate", "backdoor accuracy after the attack round (FedAvg)", "proportion", "backdoor_successes",
        "backdoor_n",
    )  # fmt: skip
    fn = "poisonlab.experiments.audit.probe_federated:run"
    defended = False  # the defenses of this audit are centralised training defenses; FL ones are arms here
    plans = {
        # minutes of CPU per trial (every round trains 10 clients): not in the 10-minute quick budget
        "quick": {"trials": 1, "clients": 100, "per_round": 10, "pretrain_rounds": 50, "defenses": ()},
        "standard": {"trials": 2, "clients": 100, "per_round": 10, "pretrain_rounds": 100},
        "full": {"trials": 3, "clients": 100, "per_round": 10, "pretrain_rounds": 200},
    }
    seconds = {"quick": 300.0, "standard": 600.0, "full": 1200.0}

    picture = "curves_png"

    def caption(self, row: dict[str, Any]) -> str:
        return f"main and backdoor accuracy per round under FedAvg, trial {row['key']}"


def _config(ctx: TrialContext, aggregator: str) -> Any:
    from poisonlab.config import build
    from poisonlab.fl.config import FLExperimentConfig

    p = ctx.params
    base = ctx.config.model_dump(mode="json")
    model = {**base["model"], "norm": "none"}
    data = {
        "seed": ctx.seed,
        "data": base["data"],
        "model": model,
        "runtime": base["runtime"],
        "fl": {
            "clients": p["clients"],
            "per_round": p["per_round"],
            "pretrain_rounds": p["pretrain_rounds"],
            "rounds": 2,
        },
        "attack": {"kind": "model-replacement", "round": 1},
        "aggregator": {"name": aggregator},
    }
    return build(FLExperimentConfig, data)


def run(spec: dict[str, Any]) -> dict[str, Any]:
    from poisonlab.fl.experiment import fl_experiment

    ctx = TrialContext.from_spec(spec)
    t0 = time.perf_counter()
    import shutil

    folder = Path(ctx.workdir) / "federated" / f"seed{ctx.seed}"
    # one folder: both arms reuse one pretrained global model (cached under its pretraining hash)
    fedavg = fl_experiment(_config(ctx, "fedavg"), folder)
    shutil.copyfile(folder / "report" / "curves.png", folder / "curves-fedavg.png")
    clipped = fl_experiment(_config(ctx, "clip"), folder)
    s, c = fedavg["summary"], clipped["summary"]
    after = s["backdoor_after"]
    metrics = {
        "backdoor_rate": float(after["rate"]),
        "backdoor_successes": int(after["successes"]),
        "backdoor_n": int(after["n"]),
        "backdoor_before": float(s["backdoor_before"]),
        "main_before": float(s["main_before"]),
        "main_drop": float(s["main_drop"]),
        "backdoor_rate_clipped": float(c["backdoor_after"]["rate"]),
        "main_drop_clipped": float(c["main_drop"]),
        "seconds": time.perf_counter() - t0,
    }
    meta = ctx.meta(
        curves_png=str(folder / "curves-fedavg.png"),
        pretrain_hash=fedavg["pretrain_hash"],
        norm_bound=c.get("norm_bound"),
    )
    return {"metrics": metrics, "meta": meta}


register(FederatedBackdoorProbe())
