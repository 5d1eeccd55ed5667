"""Benchmark: K ConvNets trained at once (fused / process pool) against K sequential Trainer runs.

All strategies run from one process on the same cores, interleaved round-robin; each trial records
how many cores other jobs kept busy meanwhile (``other_jobs_cores``), since on a shared machine they
decide the outcome. Writes ``benchmarks/out/<name>.json`` (default many.json) and prints one line.

    python benchmarks/bench_many.py            # K=8, width 16, batch 128, 2048 mnist5k images, 1 epoch
    python benchmarks/bench_many.py --quick    # smaller: 256 images, width 8
    python benchmarks/bench_many.py --device cuda --samples 4000
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import time

import torch

from poisonlab.config import ModelConfig, TrainConfig
from poisonlab.data import load_dataset
from poisonlab.rng import SeedTree
from poisonlab.training.many import train_many

from common import environment, write_json


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--k", type=int, default=8, help="models trained at once")
    p.add_argument("--model", default="convnet", choices=["convnet", "lenet", "mlp"])
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--norm", default="batch", choices=["batch", "group", "none"])
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--samples", type=int, default=2048, help="first N training images (mnist5k; digits for mlp)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--repeats", type=int, default=1, help="round-robin rounds over the strategies")
    p.add_argument("--strategies", default=None, help="comma list (default: fused,processes; fused on cuda)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--quick", action="store_true", help="256 images, width 8")
    p.add_argument("--name", default="many", help="output file benchmarks/out/<name>.json")
    args = p.parse_args(argv)
    if args.quick:
        args.samples, args.width = 256, 8
    if args.strategies is None:
        args.strategies = "fused" if args.device == "cuda" else "fused,processes"
    return args


def timed_run(strategy: str, k: int, args: argparse.Namespace, data, mean, std) -> tuple[float, list]:
    """Seconds for one ``train_many`` call (synchronised on CUDA) and the trained models."""
    model = ModelConfig(name=args.model, width=args.width, norm=args.norm)
    recipe = TrainConfig(epochs=args.epochs, batch_size=args.batch_size)
    seeds = [SeedTree(1000 + i) for i in range(k)]
    t0 = time.perf_counter()
    nets = train_many(model, data.shape, data.num_classes, mean, std, [data] * k, recipe, seeds,
                      device=args.device, strategy=strategy)  # fmt: skip
    if args.device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0, nets


def cpu_seconds() -> tuple[float, float]:
    """(CPU seconds used by every process on the machine, by this process and its reaped children)."""
    try:
        with open("/proc/stat") as f:
            fields = [float(v) for v in f.readline().split()[1:]]
        busy = (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")  # minus idle and iowait
    except (OSError, ValueError, IndexError):
        busy = float("nan")
    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    own = sum(r.ru_utime + r.ru_stime for r in usage)
    return busy, own


def max_diff(a: list, b: list) -> float:
    """Largest absolute difference over every parameter and buffer of two model lists."""
    return max(
        float((p.float() - q.float()).abs().max())
        for x, y in zip(a, b)
        for p, q in zip(x.state_dict().values(), y.state_dict().values())
    )


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark; returns (and writes) the result record."""
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    train = load_dataset("digits" if args.model == "mlp" else "mnist5k").train
    data = train.subset(range(min(args.samples, len(train))))
    mean, std = data.channel_stats()
    strategies = ["sequential", *[s for s in args.strategies.split(",") if s != "sequential"]]
    timed_run("sequential", 2, args, data.subset(range(2 * args.batch_size)), mean, std)  # warm-up
    seconds: dict[str, list[float]] = {s: [] for s in strategies}
    trials: list[dict] = []  # with the CPU other jobs took meanwhile: they skew a trial
    diffs: dict[str, float] = {}
    for r in range(args.repeats):
        order = strategies[r % len(strategies) :] + strategies[: r % len(strategies)]
        nets = {}
        for s in order:
            busy0, own0 = cpu_seconds()
            t, nets[s] = timed_run(s, args.k, args, data, mean, std)
            busy1, own1 = cpu_seconds()
            seconds[s].append(t)
            foreign = max(0.0, (busy1 - busy0) - (own1 - own0)) / t  # cores kept busy by other jobs
            trials.append({"round": r, "strategy": s, "seconds": t, "other_jobs_cores": round(foreign, 2)})
        diffs = {s: max_diff(nets[s], nets["sequential"]) for s in strategies}
    median = {s: statistics.median(v) for s, v in seconds.items()}
    speedup = {s: median["sequential"] / median[s] for s in strategies}
    record = {
        "benchmark": "many", **environment(args.device), "cores": len(os.sched_getaffinity(0)), "K": args.k,
        "model": args.model, "width": args.width, "norm": args.norm, "batch_size": args.batch_size,
        "samples": args.samples, "epochs": args.epochs, "repeats": args.repeats, "strategies": strategies,
        "seconds": seconds, "median_seconds": median, "speedup_vs_sequential": speedup,
        "max_abs_diff_vs_sequential": diffs, "winner": min(median, key=median.get), "trials": trials,
    }  # fmt: skip
    path = write_json(args.name, record)
    parts = ", ".join(f"{s} {median[s]:.1f}s ({speedup[s]:.2f}x)" for s in strategies)
    print(f"many: K={args.k} {args.model} w{args.width} {args.device} threads={record['threads']}: {parts}; "
          f"winner {record['winner']} -> {path}")  # fmt: skip
    return record


if __name__ == "__main__":
    main()
