"""Gradient-matching crafting speed: the batched double-backward engine vs a per-poison loop (same math).

40 poisons (1% of mnist5k's 4,000 training images) of one class, ConvNet width 16 with BatchNorm in eval mode,
eps 16/255, differentiable augmentation on. "batched" is ``GradientMatching.craft`` (one double-backward over
the poison batch per step); "loop" is a plain-PyTorch baseline that builds the same poison gradient one
poison at a time (``create_graph=True`` per poison, summed), with ``torch.optim.Adam`` on the sign of the
gradient in normalised units, as the reference code does. Both start from the same delta and augmentation
stream; the first-step losses are recorded to show they compute the same thing. Weights are the fresh
initialisation: the cost of a step does not depend on them.

    python benchmarks/bench_crafting.py [--steps 5] [--repeats 2] [--threads N] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from poisonlab.attacks.poisoning import GradientMatching, PoisonTask, craft_config, matching_loss, target_gradient
from poisonlab.attacks.poisoning.gradient_matching import pixel_step_scale
from poisonlab.data import load_dataset
from poisonlab.models import build_model
from poisonlab.rng import SeedTree
from poisonlab.training.augment import DifferentiableAugment

from common import environment, write_json


def loop_craft(model: nn.Module, task: PoisonTask, steps: int, seeds: SeedTree) -> list[float]:
    """Baseline: the same crafting steps with a Python loop over poisons for the poison gradient."""
    device = next(model.parameters()).device
    cfg = craft_config(restarts=1, steps=steps)
    pos = task.train.positions_of(task.poison_ids)
    x, y = task.train.images[pos].to(device), task.train.labels[pos].to(device)
    tg = target_gradient(model, task.targets.images.to(device), task.adv_class)
    std = pixel_step_scale(model, x.shape[1])
    sub = seeds.child("craft").child("restart-0")
    delta = (torch.randn(x.shape, generator=sub.generator("init")) * cfg.eps).clamp(-cfg.eps, cfg.eps).to(device)
    u = (delta / std).requires_grad_(True)  # normalised units, as the reference
    opt = torch.optim.Adam([u], lr=cfg.tau)
    augment = DifferentiableAugment.for_shape(task.train.shape)
    rng = sub.generator("augment", device)
    params = list(model.parameters())
    losses = []
    for _ in range(steps):
        inputs = augment(x + u * std, rng)
        acc = [torch.zeros_like(p) for p in params]
        for i in range(len(x)):
            li = nn.functional.cross_entropy(model(inputs[i : i + 1]), y[i : i + 1]) / len(x)
            acc = [a + g for a, g in zip(acc, torch.autograd.grad(li, params, create_graph=True))]
        loss = matching_loss(acc, tg)
        opt.zero_grad()
        loss.backward()
        u.grad.sign_()
        opt.step()
        with torch.no_grad():
            d = (u * std).clamp(-cfg.eps, cfg.eps)
            u.copy_(((x + d).clamp(0, 1) - x) / std)
        losses.append(loss.item())
    return losses


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--poisons", type=int, default=40)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    splits = load_dataset("mnist5k")
    train = splits.train
    mean, std = train.channel_stats()
    model = build_model("convnet", train.shape, 10, SeedTree(0).generator("init"), args.width, "batch", mean, std)
    model = model.to(device).eval()
    adv = 3
    task = PoisonTask(train, train.ids[train.labels == adv][: args.poisons], splits.test.subset(torch.tensor([0])), adv)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    cfg = craft_config(restarts=1, steps=args.steps)
    times: dict[str, list[float]] = {"batched": [], "loop": []}
    first: dict[str, float] = {}
    for _ in range(args.repeats):
        for name in ("loop", "batched"):
            losses: list = []
            sync()
            t0 = time.perf_counter()
            if name == "batched":
                GradientMatching(cfg, on_step=losses.append).craft(task, [model], SeedTree(0))
                losses = [s["loss"] for s in losses]
            else:
                losses = loop_craft(model, task, args.steps, SeedTree(0))
            sync()
            times[name].append(time.perf_counter() - t0)
            first[name] = losses[0]
    med = {k: statistics.median(v) for k, v in times.items()}
    rate = {k: args.steps / v for k, v in med.items()}
    payload = {
        "benchmark": "gradient_matching_crafting",
        "model": f"convnet(width={args.width}, batchnorm, eval mode)",
        "dataset": "mnist5k train",
        "poisons": len(task.poison_ids),
        "steps_per_run": args.steps,
        "repeats": args.repeats,
        "augment": True,
        "seconds": times,
        "steps_per_second": rate,
        "speedup": rate["batched"] / rate["loop"],
        "first_step_loss": first,
        "environment": environment(str(device)),
    }
    path = write_json(f"crafting_{device.type}" if device.type != "cpu" else "crafting", payload)
    print(
        f"crafting {len(task.poison_ids)} poisons: batched {rate['batched']:.2f} steps/s, loop {rate['loop']:.3f} "
        f"steps/s, speedup {payload['speedup']:.1f}x; first-step loss {first['batched']:.6f} vs {first['loop']:.6f} "
        f"({torch.get_num_threads()} threads) -> {path}"
    )


if __name__ == "__main__":
    main()
