"""Gradient inversion speed: ``InvertingGradients`` (all clients x restarts in one vmapped stack, or a loop over
candidates) vs a plain-PyTorch loop written the way the reference code does it (same math).

T single-image client gradients from the photos dataset (3x32x32), ConvNet (BatchNorm, eval mode), R restarts,
N iterations of signed Adam with the cosine cost over all layers + TV. The baseline keeps the image in normalised
units, builds the parameter gradient with ``torch.autograd.grad(create_graph=True)``, calls ``backward``, replaces
the gradient by its sign and steps ``torch.optim.Adam`` with ``MultiStepLR``, one client and one restart at a
time, as ``inversefed.GradientReconstructor`` does. All three start from the same images; the first-iteration
costs are recorded to show they compute the same thing. Reported: candidate-iterations per second and wall time
per image for N iterations (and extrapolated to the reference's 4,000).

    python benchmarks/bench_inversion.py [--updates 4] [--restarts 2] [--iterations 10] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import time

import torch
import torch.nn.functional as F

from poisonlab.attacks.federated.inversion import InvertingGradients, ServerPayload, client_update, invert_config
from poisonlab.attacks.federated.inversion.objectives import cosine_cost, total_variation
from poisonlab.data import load_dataset
from poisonlab.models import build_model
from poisonlab.rng import SeedTree

from common import environment, write_json


def baseline(payload: ServerPayload, updates: list, x0: torch.Tensor, labels: list, iterations: int, tv: float):
    """Reference-style loop: one (client, restart) candidate at a time, torch.optim.Adam on sign(grad)."""
    model = payload.model
    params = list(model.parameters())
    mean, std = payload.normalisation()
    first, outs = [], []
    r = x0.shape[0] // len(updates)
    for c in range(x0.shape[0]):
        target = list(updates[c // r].tensors.values())
        y = labels[c // r]
        z = ((x0[c] - mean) / std).clone().requires_grad_(True)
        opt = torch.optim.Adam([z], lr=0.1)
        marks = [iterations // 2.667, iterations // 1.6, iterations // 1.142]
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=marks, gamma=0.1)
        for it in range(iterations):
            opt.zero_grad()
            loss = F.cross_entropy(model(z * std + mean), y)
            grads = torch.autograd.grad(loss, params, create_graph=True)
            cost = cosine_cost(grads, target)
            total = cost + tv * total_variation(z)
            total.backward()
            z.grad.sign_()
            opt.step()
            sched.step()
            with torch.no_grad():
                z.data = torch.max(torch.min(z, (1 - mean) / std), -mean / std)
            if it == 0:
                first.append(float(cost.detach()))
        outs.append((z.detach() * std + mean).clamp(0, 1))
    return first, torch.stack(outs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--updates", type=int, default=4)
    ap.add_argument("--restarts", type=int, default=2)
    ap.add_argument("--iterations", type=int, default=10)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    splits = load_dataset("photos")
    mean, std = splits.train.channel_stats()
    model = build_model(
        "convnet", splits.train.shape, 6, SeedTree(0).generator("init"), width=args.width, mean=mean, std=std
    ).eval()
    payload = ServerPayload.from_model(model, splits.train.shape, 6)
    test = splits.test
    updates = [
        client_update(payload, test.images[i : i + 1], test.labels[i : i + 1], share_labels=True)
        for i in range(args.updates)
    ]
    labels = [u.labels for u in updates]
    cfg = invert_config(iterations=args.iterations, restarts=args.restarts)
    tv = float(cfg.resolved("tv"))
    attack = InvertingGradients(cfg, seed=0)
    mean_t, std_t = payload.normalisation()
    x0 = torch.cat([attack.initial_images(payload, i, 1, mean_t, std_t) for i in range(args.updates)])
    candidates = args.updates * args.restarts
    rows = {}
    for name, vectorize in (("vmapped", True), ("looped", False)):
        a = InvertingGradients(
            invert_config(iterations=args.iterations, restarts=args.restarts, vectorize=vectorize), seed=0
        )
        t0 = time.perf_counter()
        recs = a.reconstruct_many(payload, updates)
        wall = time.perf_counter() - t0
        best = [r.meta["best_restart"] for r in recs]
        rows[name] = {"seconds": wall, "first_costs_best_restart": [r.meta["history"][0][1] for r in recs]}
    t0 = time.perf_counter()
    first, _ = baseline(payload, updates, x0, labels, args.iterations, tv)
    seconds = time.perf_counter() - t0
    picked = [first[i * args.restarts + b] for i, b in enumerate(best)]
    rows["baseline"] = {"seconds": seconds, "first_costs_best_restart": picked}
    for r in rows.values():
        r["candidate_iterations_per_second"] = candidates * args.iterations / r["seconds"]
        r["seconds_per_image"] = r["seconds"] / args.updates
        r["seconds_per_image_at_4000_iterations"] = r["seconds_per_image"] * 4000 / args.iterations
    base = rows["baseline"]["seconds"]
    payload_out = {
        "benchmark": "inversion",
        "setup": {
            **vars(args),
            "dataset": "photos",
            "model": f"convnet width {args.width} (BatchNorm, eval)",
            "candidates": candidates,
            "load_average": os.getloadavg(),
        },
        "environment": environment("cpu"),
        "results": rows,
        "speedup_vs_baseline": {k: base / v["seconds"] for k, v in rows.items() if k != "baseline"},
    }
    path = write_json("inversion", payload_out)
    for k, v in rows.items():
        print(
            f"{k:>9}: {v['seconds']:.2f} s, {v['candidate_iterations_per_second']:.2f} candidate-it/s, "
            f"{v['seconds_per_image']:.2f} s/image for {args.iterations} it"
        )
    print(f"speedups vs baseline: {payload_out['speedup_vs_baseline']}  -> {path}")


if __name__ == "__main__":
    main()
