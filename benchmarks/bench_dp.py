"""DP-SGD step time: our Trainer + DPSGD hook vs non-private Trainer steps vs Opacus' engine, same ConvNet.

Per model variant (ConvNet norm none / group), three steppers train the same initial model on mnist5k, all in
one process, interleaved round-robin (the machine is shared: compare ratios, not seconds):

* ``plain``  -- the non-private Trainer step (fixed batch of B, forward, backward, SGD step);
* ``dpsgd``  -- the Trainer with our DPSGD hook (Poisson sample of expected size B, torch.func per-sample
  gradients, clipping, noise, accounting);
* ``opacus`` -- Opacus' standard engine: ``GradSampleModule`` (hook-based per-sample gradients) +
  ``DPOptimizer`` (clip, noise, step) on fixed batches of B, the loop Opacus' tutorials write.

Reported: median seconds per step and the ratios dpsgd / plain (bar: <= 3 for ConvNet) and dpsgd / opacus
(<= 1 means we are not slower than the standard engine).

    python benchmarks/bench_dp.py [--width 16] [--batch-size 256] [--steps 8] [--repeats 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from collections.abc import Callable

import torch
from torch import nn

from poisonlab.config import TrainConfig
from poisonlab.data import load_dataset
from poisonlab.defenses.dp.dp_sgd import DPSGD
from poisonlab.models import build_model
from poisonlab.rng import SeedTree
from poisonlab.training import Trainer
from poisonlab.training.hooks import Batch

from common import environment, write_json

RECIPE = dict(lr=0.1, momentum=0.5, nesterov=False, weight_decay=0.0, schedule="none", epochs=1)


def _fresh(data, width: int, norm: str) -> nn.Module:
    mean, std = data.channel_stats()
    return build_model("convnet", data.shape, data.num_classes, SeedTree(0).generator("init"), width, norm, mean, std)


def trainer_stepper(data, width: int, norm: str, batch: int, private: bool) -> Callable[[int], None]:
    """A closure running ``k`` Trainer steps (with the DPSGD hook when ``private``)."""
    recipe = TrainConfig(batch_size=batch, **RECIPE)
    hooks = [DPSGD(10, torch.Generator().manual_seed(1), noise_multiplier=1.0, max_grad_norm=1.0)] if private else []
    trainer = Trainer(_fresh(data, width, norm), data, recipe, SeedTree(0), hooks=hooks)
    trainer.model.train()
    g = torch.Generator().manual_seed(2)

    def run(k: int) -> None:
        for _ in range(k):
            idx = torch.randint(0, len(data), (batch,), generator=g)
            trainer.train_step(Batch(data.images[idx], data.labels[idx], data.ids[idx]))

    return run


def opacus_stepper(data, width: int, norm: str, batch: int) -> Callable[[int], None]:
    """Opacus' GradSampleModule + DPOptimizer on the same model and fixed batches of ``batch``."""
    from opacus import GradSampleModule
    from opacus.optimizers import DPOptimizer

    model = GradSampleModule(_fresh(data, width, norm))
    opt = DPOptimizer(
        torch.optim.SGD(model.parameters(), lr=RECIPE["lr"], momentum=RECIPE["momentum"]),
        noise_multiplier=1.0,
        max_grad_norm=1.0,
        expected_batch_size=batch,
    )
    g = torch.Generator().manual_seed(2)

    def run(k: int) -> None:
        for _ in range(k):
            idx = torch.randint(0, len(data), (batch,), generator=g)
            loss = nn.functional.cross_entropy(model(data.images[idx]), data.labels[idx])
            opt.zero_grad(set_to_none=True)
            with warnings.catch_warnings():  # "full backward hook ... no inputs require gradients"
                warnings.simplefilter("ignore")
                loss.backward()
            opt.step()

    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=8, help="steps per timed block")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--norms", default="none,group")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--no-opacus", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    data = load_dataset("mnist5k").train
    results = {}
    for norm in args.norms.split(","):
        steppers = {
            "plain": trainer_stepper(data, args.width, norm, args.batch_size, False),
            "dpsgd": trainer_stepper(data, args.width, norm, args.batch_size, True),
        }
        if not args.no_opacus:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                steppers["opacus"] = opacus_stepper(data, args.width, norm, args.batch_size)
        for run in steppers.values():  # warm-up
            run(1)
        times: dict[str, list[float]] = {k: [] for k in steppers}
        for _ in range(args.repeats):
            for name, run in steppers.items():
                t0 = time.perf_counter()
                run(args.steps)
                times[name].append((time.perf_counter() - t0) / args.steps)
        med = {k: statistics.median(v) for k, v in times.items()}
        entry = {
            "seconds_per_step": times,
            "median_seconds_per_step": med,
            "dpsgd_over_plain": med["dpsgd"] / med["plain"],
        }
        if "opacus" in med:
            entry["dpsgd_over_opacus"] = med["dpsgd"] / med["opacus"]
            entry["opacus_over_plain"] = med["opacus"] / med["plain"]
        results[norm] = entry
        shown = ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in med.items())
        extra = f", dpsgd/opacus {entry['dpsgd_over_opacus']:.2f}" if "opacus" in med else ""
        print(
            f"convnet(width={args.width}, norm={norm}), batch {args.batch_size}: {shown}; "
            f"dpsgd/plain {entry['dpsgd_over_plain']:.2f}{extra}"
        )
    payload = {
        "benchmark": "dp_sgd_step_time",
        "model": f"convnet(width={args.width})",
        "dataset": "mnist5k train (4000)",
        "batch_size": args.batch_size,
        "steps_per_block": args.steps,
        "repeats": args.repeats,
        "results": results,
        "bar_dpsgd_over_plain": 3.0,
        "environment": environment("cpu"),
    }
    print(f"-> {write_json('dp_sgd', payload)}")


if __name__ == "__main__":
    main()
