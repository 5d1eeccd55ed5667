"""Benchmark: rounds per second of the in-process FL engine against a plain-PyTorch loop over the same clients.

Every contender runs the same R rounds of FedAvg (same sampled clients, same per-client batch schedules from the
same generators, no evaluation): ``sequential`` and ``vmap`` are our RoundEngine strategies; ``baseline`` is a
plain loop (one ``nn.Module`` + ``torch.optim.SGD`` per client, ``load_state_dict`` in, delta out, mean);
``flower`` (when flwr and its simulation engine import) is the same experiment on Flower's simulation.
Contenders run interleaved round-robin ``--repeats`` times; the final global models are compared (max abs
difference) so a fast but wrong engine shows up. Writes ``benchmarks/out/fl.json``.

    .venv/bin/python benchmarks/bench_fl.py                       # LeNet, 100 clients, 10 per round, 10 rounds
    .venv/bin/python benchmarks/bench_fl.py --model mlp --width 64
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
import torch.nn.functional as F

from poisonlab.defenses.aggregation import FedAvg
from poisonlab.fl.config import load_fl_config
from poisonlab.fl.engine import RoundEngine
from poisonlab.fl.experiment import FLSetup
from poisonlab.fl.local import batch_schedule
from poisonlab.rng import SeedTree

from common import environment, write_json


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="lenet", choices=["lenet", "mlp"])
    p.add_argument("--width", type=int, default=None)
    p.add_argument("--clients", type=int, default=100)
    p.add_argument("--per-round", type=int, default=10)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--contenders", default="sequential,vmap,baseline,flower")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--name", default="fl")
    return p.parse_args(argv)


def engine_run(setup: FLSetup, strategy: str, rounds: int) -> torch.Tensor:
    seeds = setup.seeds.child("bench")
    eng = RoundEngine(setup.local_trainer(strategy), setup.federation, FedAvg(), seeds)
    g, _ = eng.run(setup.initial.clone(), rounds)
    return g


def baseline_run(setup: FLSetup, rounds: int) -> torch.Tensor:
    """Plain PyTorch: per client a module, torch.optim.SGD over the same batches, deltas averaged."""
    seeds = SeedTree(setup.seeds.root, setup.seeds.path).child("bench")
    model, layout, recipe = setup.model, setup.layout, setup.recipe
    images, labels = setup.splits.train.images, setup.splits.train.labels
    params = list(model.parameters())
    g = setup.initial.clone()
    for r in range(1, rounds + 1):
        clients = setup.federation.sample(seeds.generator(f"sampling/round{r}"))
        deltas = []
        for c in clients:
            shard = setup.federation.shards[c]
            plan = batch_schedule(len(shard), recipe, seeds.generator(f"client/r{r}/c{c}"))
            layout.load_into(model, g)
            opt = torch.optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay)
            for step in plan:
                rows = shard[step[step >= 0]]
                loss = F.cross_entropy(model(images[rows]), labels[rows])
                opt.zero_grad()
                loss.backward()
                opt.step()
            deltas.append(layout.flatten(model) - g)
        g = g + setup.federation.eta * torch.stack(deltas).mean(0)
    return g


def flower_run(setup: FLSetup, rounds: int) -> torch.Tensor | None:
    try:
        from poisonlab.fl.flower.simulation import run_flower_rounds
    except ImportError:
        return None
    g, _ = run_flower_rounds(setup, FedAvg(), rounds, setup.seeds.child("bench"))
    return g


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    overrides = [f"model.name={args.model}", f"fl.clients={args.clients}", f"fl.per_round={args.per_round}"]
    if args.width:
        overrides.append(f"model.width={args.width}")
    setup = FLSetup(load_fl_config(overrides=overrides))
    contenders = args.contenders.split(",")
    times: dict[str, list[float]] = {c: [] for c in contenders}
    finals: dict[str, torch.Tensor] = {}
    for _ in range(args.repeats):
        for c in contenders:
            t0 = time.perf_counter()
            if c == "baseline":
                g = baseline_run(setup, args.rounds)
            elif c == "flower":
                g = flower_run(setup, args.rounds)
                if g is None:
                    times.pop(c, None)
                    continue
            else:
                g = engine_run(setup, c, args.rounds)
            times[c].append(time.perf_counter() - t0)
            finals[c] = g
    ref = finals["baseline"] if "baseline" in finals else next(iter(finals.values()))
    rows = {}
    for c, ts in times.items():
        best = min(ts)
        rows[c] = {
            "seconds": ts,
            "rounds_per_second": args.rounds / best,
            "median_rounds_per_second": args.rounds / statistics.median(ts),
            "max_abs_diff_to_baseline": float((finals[c] - ref).abs().max()),
        }
    if "baseline" in rows:
        for c in rows:
            rows[c]["speedup_vs_baseline"] = rows[c]["rounds_per_second"] / rows["baseline"]["rounds_per_second"]
    payload = {
        "args": vars(args),
        "results": rows,
        "loadavg": os.getloadavg(),
        "parameters": setup.layout.size,
        "environment": environment("cpu"),
    }
    path = write_json(args.name, payload)
    for c, r in rows.items():
        print(
            f"{c:10s} {r['rounds_per_second']:.3f} rounds/s  x{r.get('speedup_vs_baseline', 1):.2f}  "
            f"max|diff| {r['max_abs_diff_to_baseline']:.2e}"
        )
    print(path)


if __name__ == "__main__":
    main()
