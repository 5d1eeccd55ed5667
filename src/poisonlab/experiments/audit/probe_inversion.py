"""Audit probe "inversion": how much of a client's private batch a federated server recovers from its update."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from poisonlab.experiments.audit.context import TrialContext
from poisonlab.experiments.audit.probes import Headline, Probe, register


class InversionProbe(Probe):
    """Inverting Gradients (Geiping et al., NeurIPS 2020) on the recipe's model in a federated version of the
    recipe: a client sends the gradient of one private batch on the global model (FedSGD); the server inverts
    it (cosine similarity over all layers + total variation, signed Adam, box constraint, labels recovered
    from the last layer). Headline: PSNR of the reconstructions (higher = more leakage).

    Threat model: an honest-but-curious server that sees one client update and the model it sent; never the
    private batch.
    """

    name = "inversion"
    title = "Gradient inversion of a federated update"
    threat = "the server inverts one client's gradient (FedSGD) of the recipe's model at initialisation"
    headline = Headline("psnr", "reconstruction PSNR, dB (higher = more leakage)", rate=False)
    fn = "poisonlab.experiments.audit.probe_inversion:run"
    defended = False  # centralised training defenses do not change what one shared gradient reveals
    plans = {
        "quick": {"trials": 1, "batch_size": 1, "images": 1, "iterations": 2000, "restarts": 1},
        "standard": {"trials": 1, "batch_size": 1, "images": 4, "iterations": 2000, "restarts": 2},
        "full": {"trials": 3, "batch_size": 1, "images": 8, "iterations": 4000, "restarts": 2},
    }
    seconds = {"quick": 40.0, "standard": 300.0, "full": 900.0}

    picture = "grid_png"

    def caption(self, row: dict[str, Any]) -> str:
        return f"ground truth (top) and reconstruction (bottom), trial {row['key']}"


def run(spec: dict[str, Any]) -> dict[str, Any]:
    from poisonlab.attacks.federated.inversion.config import InvertExperimentConfig
    from poisonlab.attacks.federated.inversion.experiment import invert_experiment
    from poisonlab.config import build

    ctx = TrialContext.from_spec(spec)
    t0 = time.perf_counter()
    p = ctx.params
    data = ctx.config.model_dump(mode="json")
    data["seed"] = ctx.seed
    data["invert"] = {
        "attack": "inverting-gradients",
        "iterations": p["iterations"],
        "restarts": p["restarts"],
        "batch_size": p["batch_size"],
        "trials": p["images"] // p["batch_size"],
    }
    config = build(InvertExperimentConfig, data)
    folder = Path(ctx.workdir) / "inversion" / f"seed{ctx.seed}"
    row = invert_experiment(config, folder, progress=False)
    m = row["metrics"]
    metrics = {
        "psnr": float(m["psnr_mean"]),
        "ssim": float(m["ssim_mean"]),
        "mse": float(m["mse_mean"]),
        "label_accuracy": float(m["label_accuracy"]),
        "images": int(m["images"]),
        "seconds": time.perf_counter() - t0,
    }
    return {"metrics": metrics, "meta": ctx.meta(grid_png=str(folder / "report" / "grid.png"))}


register(InversionProbe())
