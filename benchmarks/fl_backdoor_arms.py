"""The federated backdoor must-show: one converged global model, one attacker in one round, many defenses.

Runs ``fl_experiment`` for each (attack, aggregator) arm in one workdir (so all arms share the cached FedAvg
pretraining), then writes benchmarks/out/fl_arms.json (per-arm summary and per-round curves) and
benchmarks/out/fl_arms_<task>.png (per-round main and backdoor accuracy of every arm).

    .venv/bin/python benchmarks/fl_backdoor_arms.py --task pattern --workdir /tmp/fl-arms
"""

from __future__ import annotations

import argparse
import time

import torch

from poisonlab.fl.config import load_fl_config
from poisonlab.fl.experiment import fl_experiment
from poisonlab.fl.report import curves_png

from common import OUT, environment, write_json

ARMS = (
    ("none", "fedavg"),
    ("model-replacement", "fedavg"),
    ("model-replacement", "clip"),
    ("model-replacement", "median"),
    ("model-replacement", "trimmed-mean"),
    ("model-replacement", "krum"),
    ("model-replacement", "multi-krum"),
    ("model-replacement", "norm-detector"),
    ("constrain-and-scale", "norm-detector"),
    ("constrain-and-scale", "clip"),
    ("model-replacement", "dp"),
)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default="pattern", choices=["pattern", "semantic"])
    p.add_argument("--workdir", required=True)
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--attack-round", type=int, default=5)
    p.add_argument("--arms", nargs="*", help="attack/aggregator pairs, e.g. model-replacement/fedavg")
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--name", help="output name (default fl_arms_<task>)")
    args = p.parse_args()
    torch.set_num_threads(1)
    arms = [tuple(a.split("/")) for a in args.arms] if args.arms else ARMS
    base = [f"attack.task={args.task}", f"fl.rounds={args.rounds}", f"attack.round={args.attack_round}"]
    results, curves = {}, {}
    for attack, aggregator in arms:
        cfg = load_fl_config(
            overrides=[*base, *args.overrides, f"attack.kind={attack}", f"aggregator.name={aggregator}"]
        )
        t0 = time.perf_counter()
        row = fl_experiment(cfg, f"{args.workdir}/{args.task}", store=f"{args.workdir}/results.sqlite")
        label = f"{attack}/{aggregator}"
        s = row["summary"]
        results[label] = {"summary": s, "seconds": time.perf_counter() - t0, "config_hash": row["config_hash"]}
        curves[label] = [{k: h[k] for k in ("round", "main_accuracy", "backdoor_accuracy")} for h in row["history"]]
        print(
            f"{label:40s} main {s['main_before']:.3f}->{s['main_after']['rate']:.3f} "
            f"backdoor {s['backdoor_after']['rate']:.3f} (final {s['backdoor_final']['rate']:.3f}) "
            f"flagged={s.get('attacker_flagged')} S={s['norm_bound']:.3f}",
            flush=True,
        )
    OUT.mkdir(parents=True, exist_ok=True)
    name = args.name or f"fl_arms_{args.task}"
    (OUT / f"{name}.png").write_bytes(curves_png(curves, args.attack_round))
    cfg0 = load_fl_config(overrides=[*base, *args.overrides]).model_dump(mode="json")
    payload = {"task": args.task, "config": cfg0, "arms": results, "curves": curves, "environment": environment("cpu")}
    print(write_json(name, payload))


if __name__ == "__main__":
    main()
