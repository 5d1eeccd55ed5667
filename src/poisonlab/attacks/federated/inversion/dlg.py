"""DLG and iDLG: Euclidean gradient matching with L-BFGS, the baselines of Inverting Gradients."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch.func import grad_and_value

from poisonlab.attacks.federated.inversion.base import GradientInversion, labels_for
from poisonlab.attacks.federated.inversion.client import update_simulator
from poisonlab.attacks.federated.inversion.config import InvertConfig
from poisonlab.attacks.federated.inversion.messages import ClientUpdate, ServerPayload
from poisonlab.attacks.federated.inversion.objectives import COSTS, total_variation
from poisonlab.attacks.federated.inversion.reconstruction import Reconstruction
from poisonlab.rng import SeedTree


class DeepLeakage(GradientInversion):
    """Deep Leakage from Gradients (Zhu, Liu & Han, NeurIPS 2019) and iDLG (Zhao, Mopuri & Bilen 2020):
    L-BFGS (lr 1, torch defaults) on dummy images, in normalised units and without a box, minimising the squared
    Euclidean distance between their gradient and the observed one. DLG optimises soft labels jointly (the
    dummy label logits start as N(0, 1)); iDLG first reads the label(s) off the last layer. Settings follow
    inverting-gradients' ``--optim zhu`` baseline (500 L-BFGS steps). Restarts run one after another: L-BFGS'
    curvature pairs and line search couple whatever is optimised together, so they are not stacked.

    Threat model: honest-but-curious server; knows the architecture and parameters it sent and receives one
    client's update, never its data.

    Args:
        config: settings; ``iterations``/``lr``/``tv``/``cost`` default to DLG's when unset.
        optimize_labels: True for DLG (soft labels learnt jointly), False for iDLG (labels recovered).
        seed: root seed; update ``i`` draws from ``seed/update-i/init``.
    """

    def __init__(self, config: InvertConfig | None = None, optimize_labels: bool = True, seed: int = 0) -> None:
        self.config = config or InvertConfig(attack="dlg" if optimize_labels else "idlg")
        self.optimize_labels = optimize_labels
        self.seed = seed

    def reconstruct(self, payload: ServerPayload, update: ClientUpdate) -> Reconstruction:
        return self._reconstruct(payload, update, 0)

    def reconstruct_many(self, payload: ServerPayload, updates: list[ClientUpdate]) -> list[Reconstruction]:
        return [self._reconstruct(payload, u, i) for i, u in enumerate(updates)]

    def _reconstruct(self, payload: ServerPayload, update: ClientUpdate, index: int) -> Reconstruction:
        update.check_against(payload)
        cfg = self.config
        iterations, lr, tv = int(cfg.resolved("iterations")), float(cfg.resolved("lr")), float(cfg.resolved("tv"))
        cost_fn = COSTS[cfg.resolved("cost")]
        mean, std = payload.normalisation()
        names = list(payload.parameters)
        target = [update.tensors[k] for k in names]
        simulate = update_simulator(payload, update)
        n, k = update.num_images, payload.num_classes
        soft = self.optimize_labels and update.labels is None
        fixed, source = (None, "recovered:dlg-joint") if soft else labels_for(payload, update, cfg.labels)
        gen = SeedTree(self.seed).child(f"update-{index}").generator("init")

        def objective(z: torch.Tensor, label_logits: torch.Tensor) -> torch.Tensor:
            y = label_logits if soft else fixed
            c = cost_fn([simulate(mean + std * z, y)[name] for name in names], target)
            return c + tv * total_variation(z) if tv > 0 else c

        value_and_grads = grad_and_value(objective, argnums=(0, 1))
        candidates, scores, labels_out = [], [], []
        t0 = time.perf_counter()
        for _ in range(cfg.restarts):
            z = torch.randn((n, *payload.data_shape), generator=gen).to(payload.device).requires_grad_(True)
            logits = torch.randn((n, k), generator=gen).to(payload.device).requires_grad_(soft)
            params = [z, logits] if soft else [z]
            opt = torch.optim.LBFGS(params, lr=lr, max_iter=cfg.lbfgs_max_iter)
            closure = _closure(value_and_grads, z, logits, soft)
            best_z, best_val = z.detach().clone(), float("inf")
            for _ in range(iterations):
                value = float(opt.step(closure))
                if not torch.isfinite(z).all() or value != value:
                    break
                if value < best_val:
                    best_val, best_z = value, z.detach().clone()
            with torch.no_grad():
                final = objective(best_z, logits.detach())
            candidates.append(best_z)
            scores.append(float(final) if torch.isfinite(final) else float("inf"))
            labels_out.append(logits.detach().argmax(-1).sort().values if soft else fixed)
        seconds = time.perf_counter() - t0
        best = min(range(len(scores)), key=scores.__getitem__)
        images = (mean + std * candidates[best]).clamp(0, 1).detach()
        meta = {
            "attack": "dlg" if soft else "idlg",
            "iterations": iterations,
            "lr": lr,
            "tv": tv,
            "cost": cfg.resolved("cost"),
            "restarts": cfg.restarts,
            "lbfgs_max_iter": cfg.lbfgs_max_iter,
            "seconds": seconds,
            "best_restart": best,
        }
        return Reconstruction(images, labels_out[best], source, scores[best], torch.tensor(scores), meta)


def _closure(
    value_and_grads: Callable, z: torch.Tensor, logits: torch.Tensor, soft: bool
) -> Callable[[], torch.Tensor]:
    def closure() -> torch.Tensor:
        (gz, gl), value = value_and_grads(z.detach(), logits.detach())
        z.grad = gz
        if soft:
            logits.grad = gl
        return value.detach()

    return closure
