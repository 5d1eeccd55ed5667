"""Trainer throughput vs a minimal hand-written PyTorch loop: same model, data, recipe and thread count.

Both loops run alternately in one process (this machine is noisy: compare ratios, not seconds).
The ratio is trainer samples/s divided by plain-loop samples/s; the bar is >= 0.9.

    python benchmarks/bench_trainer.py [--epochs 1] [--repeats 3] [--device cpu|cuda] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from poisonlab.config import TrainConfig
from poisonlab.data import load_dataset
from poisonlab.models import build_model
from poisonlab.rng import SeedTree
from poisonlab.training import Trainer
from poisonlab.training.recipes import build_optimizer

from common import environment, write_json


def plain_loop(model: nn.Module, x: torch.Tensor, y: torch.Tensor, recipe: TrainConfig, seed: int) -> None:
    """The baseline: what a careful person writes by hand with tensors already on the device."""
    opt, sched = build_optimizer(model, recipe)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(recipe.epochs):
        perm = torch.randperm(len(x), generator=g).to(x.device)
        for i in range(0, len(x), recipe.batch_size):
            idx = perm[i : i + recipe.batch_size]
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sched.step()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    data = load_dataset("mnist5k").train.to(device)
    recipe = TrainConfig(epochs=args.epochs, batch_size=128, lr=0.01)
    mean, std = data.channel_stats()

    def fresh() -> nn.Module:
        gen = SeedTree(0).generator("init")
        return build_model("convnet", data.shape, 10, gen, args.width, "batch", mean, std, device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    times: dict[str, list[float]] = {"trainer": [], "plain": []}
    plain_loop(fresh(), data.images, data.labels, TrainConfig(epochs=1, batch_size=128), 0)  # warm-up
    for _ in range(args.repeats):
        for name in ("plain", "trainer"):
            model = fresh()
            sync()
            t0 = time.perf_counter()
            if name == "plain":
                plain_loop(model, data.images, data.labels, recipe, 0)
            else:
                Trainer(model, data, recipe, SeedTree(0), amp=False).fit()
            sync()
            times[name].append(time.perf_counter() - t0)
    samples = len(data) * args.epochs
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = med["plain"] / med["trainer"]
    payload = {
        "benchmark": "trainer_vs_plain_loop",
        "model": f"convnet(width={args.width})",
        "dataset": "mnist5k train (4000)",
        "epochs": args.epochs,
        "repeats": args.repeats,
        "seconds": times,
        "samples_per_second": {k: samples / v for k, v in med.items()},
        "throughput_ratio": ratio,
        "bar": 0.9,
        "environment": environment(str(device)),
    }
    path = write_json(f"trainer_{device.type}", payload)
    print(
        f"trainer/plain throughput ratio {ratio:.3f} (plain {samples / med['plain']:.0f}/s, "
        f"trainer {samples / med['trainer']:.0f}/s, {torch.get_num_threads()} threads) -> {path}"
    )


if __name__ == "__main__":
    main()
