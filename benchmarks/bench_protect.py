"""Secure-release crafting speed: protected samples per second, ``AvailabilityPoisoning.craft`` vs a plain-PyTorch
per-batch loop doing the same math.

The first ``--samples`` mnist5k training images, poison batches of 512, reverse cross-entropy target per batch,
``--steps`` signed-Adam steps, no augmentation, surrogate at its fresh initialisation (the cost of a step does not
depend on the weights). "engine" is our crafter (shared gradient-matching engine: one batched double-backward per
poison batch, state kept for checkpoints). "loop" is what the reference code does with plain PyTorch: per step, a
loop over the poison batches computing ``torch.autograd.grad(create_graph=True)``, the cosine over the flattened
gradients, ``backward`` into ``delta.grad``, then ``torch.optim.Adam`` on the sign in normalised units and a clamp.
Both start from the same delta; the first-step alignment losses are recorded to show they compute the same thing.
Throughput = samples x steps / seconds.

``--method adversarial-targeted`` times the adversarial poisons instead (one backward per batch, PGD): the loop is
the reference's ``_forge`` with ``--attackoptim PGD``: per step, a loop over loader batches of 128 computing
CE towards ``(y + 1) mod 10``, ``backward`` into the batch's delta, a signed step of ``0.05 * eps`` and a clamp.

    python benchmarks/bench_protect.py [--samples 1024] [--steps 3] [--repeats 2] [--threads 2] [--model lenet]
        [--method alignment|adversarial-targeted]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from poisonlab.attacks.poisoning.availability import AvailabilityPoisoning, ProtectTask, reverse_cross_entropy
from poisonlab.attacks.poisoning.gradient_matching import init_delta, pixel_step_scale
from poisonlab.attacks.poisoning.protect_config import protect_config
from poisonlab.data import load_dataset
from poisonlab.models import build_model
from poisonlab.rng import SeedTree

from common import environment, write_json


def loop_protect(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int, seeds: SeedTree):
    """Baseline: the reference's per-batch loop in plain PyTorch (normalised-units Adam on the sign)."""
    params = [p for p in model.parameters() if p.requires_grad]
    std = pixel_step_scale(model, x.shape[1])
    starts = []
    for b, s in enumerate(range(0, len(x), 512)):
        sub = seeds.child("craft").child(f"batch-{b}").child("restart-0")
        shape = x[s : s + 512].shape
        d0 = init_delta("randn", shape, protect_config(eps=eps).linf, sub.generator("init"))
        starts.append(((x[s : s + 512] + d0).clamp(0, 1)) - x[s : s + 512])
    u = (torch.cat(starts) / std).requires_grad_(True)
    opt = torch.optim.Adam([u], lr=0.1)
    targets = []
    for s in range(0, len(x), 512):
        loss = reverse_cross_entropy(model(x[s : s + 512]), y[s : s + 512])
        targets.append(torch.cat([g.flatten() for g in torch.autograd.grad(loss, params)]).detach())
    first = []
    for step in range(steps):
        u.grad = torch.zeros_like(u)
        for b, s in enumerate(range(0, len(x), 512)):
            d = u[s : s + 512].detach().requires_grad_(True)
            ce = nn.functional.cross_entropy(model(x[s : s + 512] + d * std), y[s : s + 512])
            g = torch.cat([v.flatten() for v in torch.autograd.grad(ce, params, create_graph=True)])
            loss = 1 - nn.functional.cosine_similarity(g, targets[b], dim=0)
            loss.backward()
            u.grad[s : s + 512] = d.grad
            if step == 0:
                first.append(float(loss.detach()))
        u.grad.sign_()
        opt.step()
        with torch.no_grad():
            u.data = torch.maximum(torch.minimum(u, eps / std), -eps / std)
            u.data = torch.maximum(torch.minimum(u, (1 - x) / std), -x / std)
    return first


def loop_adversarial(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int, seeds: SeedTree):
    """Baseline: the reference's PGD loop over loader batches of 128, in plain PyTorch."""
    starts = []
    for b, s in enumerate(range(0, len(x), 512)):
        sub = seeds.child("craft").child(f"batch-{b}").child("restart-0")
        d0 = init_delta("randn", x[s : s + 512].shape, protect_config(eps=eps).linf, sub.generator("init"))
        starts.append(((x[s : s + 512] + d0).clamp(0, 1)) - x[s : s + 512])
    delta = torch.cat(starts)
    first = []
    for step in range(steps):
        for s in range(0, len(x), 128):
            d = delta[s : s + 128].clone().requires_grad_(True)
            loss = nn.functional.cross_entropy(model(x[s : s + 128] + d), (y[s : s + 128] + 1) % 10)
            loss.backward()
            with torch.no_grad():
                d -= 0.05 * eps * d.grad.sign()
                d.copy_(torch.maximum(torch.minimum(d, torch.full_like(d, eps)), torch.full_like(d, -eps)))
                d.copy_(torch.maximum(torch.minimum(d, 1 - x[s : s + 128]), -x[s : s + 128]))
            delta[s : s + 128] = d.detach()
            if step == 0:
                first.append(float(loss.detach()))
    return [sum(first) / len(first)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model", default="lenet")
    ap.add_argument("--width", type=int, default=None)
    ap.add_argument("--method", choices=["alignment", "adversarial-targeted"], default="alignment")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    train = load_dataset("mnist5k").train
    train = train.subset(torch.arange(args.samples))
    mean, std = train.channel_stats()
    model = build_model(args.model, train.shape, 10, SeedTree(0).generator("init"), args.width, mean=mean, std=std)
    model.eval()
    eps = 64 / 255
    cfg = protect_config(eps=eps, steps=args.steps, pbatch=512, schedule=False, method=args.method)
    baseline = loop_protect if args.method == "alignment" else loop_adversarial
    times: dict[str, list[float]] = {"engine": [], "loop": []}
    first: dict[str, list[float]] = {}
    for _ in range(args.repeats):
        losses: list[dict] = []
        t0 = time.perf_counter()
        AvailabilityPoisoning(cfg, on_step=losses.append).craft(ProtectTask(train, train.ids), [model], SeedTree(0))
        times["engine"].append(time.perf_counter() - t0)
        first["engine"] = [d["loss"] for d in losses if d["step"] == 0]
        if args.method != "alignment":  # the loop reports one mean over all samples
            first["engine"] = [sum(first["engine"]) / len(first["engine"])]
        t0 = time.perf_counter()
        first["loop"] = baseline(model, train.images, train.labels, eps, args.steps, SeedTree(0))
        times["loop"].append(time.perf_counter() - t0)
    work = args.samples * args.steps
    rate = {k: work / statistics.median(v) for k, v in times.items()}
    payload = {
        "benchmark": "protect",
        "environment": environment("cpu"),
        "model": args.model,
        "method": args.method,
        "samples": args.samples,
        "steps": args.steps,
        "seconds": times,
        "samples_per_second": rate,
        "speedup": rate["engine"] / rate["loop"],
        "first_step_losses": first,
    }
    path = write_json("protect" if args.method == "alignment" else f"protect_{args.method}_{args.model}", payload)
    print(f"engine {rate['engine']:.1f} samples*steps/s, loop {rate['loop']:.1f}, speedup "
          f"{payload['speedup']:.2f}x; first-step losses {first}; wrote {path}")  # fmt: skip


if __name__ == "__main__":
    main()
