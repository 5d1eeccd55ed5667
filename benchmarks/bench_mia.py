"""Benchmark: membership inference. (1) Shadow training K at once (``train_shadows`` with ``k_at_once=K``
through ``train_many``'s process pool) against one model at a time (the sequential Trainer oracle), on the
same keep-masks and seeds, with the models compared. (2) LiRA scoring pooled over the leave-one-model-out
rotations, vectorised, against a plain per-point loop in the style of the reference's ``generate_ours``.
(3) Optionally, the wall time of a whole experiment read from its ``results.json``.

    python benchmarks/bench_mia.py                       # K=2, 4 shadow models, 1 epoch, width 8
    python benchmarks/bench_mia.py --experiment W/results.json
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.stats
import torch

from poisonlab.attacks.inference.lira import pooled_scores
from poisonlab.attacks.inference.mia_experiment import load_universe
from poisonlab.attacks.inference.shadows import ShadowSpec, keep_masks, train_shadows
from poisonlab.config import ModelConfig, TrainConfig

from common import environment, write_json


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--k", type=int, default=2, help="models per train_many call (process-pool workers)")
    p.add_argument("--models", type=int, default=4, help="shadow models trained per arm")
    p.add_argument("--width", type=int, default=8)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--threads", type=int, default=2, help="torch threads (split between the K workers)")
    p.add_argument("--score-models", type=int, default=16, help="models in the LiRA scoring benchmark")
    p.add_argument("--score-points", type=int, default=2000)
    p.add_argument("--experiment", type=Path, help="results.json of a full run whose wall time to record")
    p.add_argument("--skip-training", action="store_true", help="skip the shadow-training comparison")
    p.add_argument("--name", default="mia", help="output file benchmarks/out/<name>.json")
    return p.parse_args(argv)


def loop_online_fixed(phi: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Baseline: the reference's structure, a Python loop over points per rotation with scipy."""
    out = []
    for i in range(len(phi)):
        others = np.arange(len(phi)) != i
        sp, sk = phi[others], keep[others]
        in_size, out_size = sk.sum(0).min(), (~sk).sum(0).min()
        din = [sp[sk[:, j], j][:in_size] for j in range(sp.shape[1])]
        dout = [sp[~sk[:, j], j][:out_size] for j in range(sp.shape[1])]
        mu_in = np.array([np.median(d, 0) for d in din])
        mu_out = np.array([np.median(d, 0) for d in dout])
        sigma = np.sqrt(np.mean(np.concatenate([(d - m) ** 2 for d, m in zip(din, mu_in)]), 0))  # per view
        for j in range(sp.shape[1]):
            s = scipy.stats.norm.logpdf(phi[i, j], mu_in[j], sigma) - scipy.stats.norm.logpdf(
                phi[i, j], mu_out[j], sigma
            )
            out.append(s.mean())
    return np.array(out)


def bench_training(args: argparse.Namespace) -> dict:
    universe, _ = load_universe("mnist5k", "all")
    keep = keep_masks(args.models, len(universe), torch.Generator().manual_seed(0))
    spec = ShadowSpec(ModelConfig(name="convnet", width=args.width), TrainConfig(epochs=args.epochs), keep, 0)
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, k, strategy in (("one-at-a-time", 1, "sequential"), (f"{args.k}-at-once", args.k, "processes")):
            threads = args.threads if strategy == "processes" else 1  # each worker gets 1 thread, as the oracle
            torch.set_num_threads(threads)
            t0 = time.perf_counter()
            models = train_shadows(universe, spec, Path(tmp) / label, k_at_once=k, strategy=strategy)
            out[label] = {"seconds": time.perf_counter() - t0, "threads": threads, "models": models}
        a, b = (v.pop("models") for v in out.values())
        same = all(
            torch.equal(x, y) for m, n in zip(a, b) for x, y in zip(m.state_dict().values(), n.state_dict().values())
        )
    seq, par = out["one-at-a-time"]["seconds"], out[f"{args.k}-at-once"]["seconds"]
    return {**out, "speedup": seq / par, "bit_identical": same, "models": args.models, "epochs": args.epochs}


def bench_scoring(args: argparse.Namespace) -> dict:
    rng = np.random.default_rng(0)
    keep = keep_masks(args.score_models, args.score_points, torch.Generator().manual_seed(0)).numpy()
    phi = rng.normal(size=(args.score_models, args.score_points, 5)) + keep[:, :, None]
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    fast, _ = pooled_scores("lira-online-fixed", phi, keep)
    t_fast = time.perf_counter() - t0
    t0 = time.perf_counter()
    slow = loop_online_fixed(phi, keep)
    t_loop = time.perf_counter() - t0
    return {
        "vectorised_s": t_fast,
        "loop_s": t_loop,
        "speedup": t_loop / t_fast,
        "max_abs_diff": float(np.abs(fast - slow).max()),
        "models": args.score_models,
        "points": args.score_points,
        "views": 5,
    }


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark; returns (and writes) the result record."""
    args = parse_args(argv)
    record = {"benchmark": "mia", **environment("cpu"), "cores": len(os.sched_getaffinity(0))}
    record["load_average_before"] = os.getloadavg()[0]
    record["scoring"] = bench_scoring(args)
    if not args.skip_training:
        record["training"] = bench_training(args)
    record["load_average_after"] = os.getloadavg()[0]
    if args.experiment is not None:
        row = json.loads(args.experiment.read_text())
        record["experiment"] = {"timings": row["timings"], "environment": row["environment"]}
    path = write_json(args.name, record)
    sc = record["scoring"]
    text = (
        f"LiRA scoring {sc['models']} rotations x {sc['points']} points: vectorised {sc['vectorised_s']:.2f}s vs "
        f"loop {sc['loop_s']:.1f}s ({sc['speedup']:.0f}x, max diff {sc['max_abs_diff']:.1e})"
    )
    if "training" in record:
        tr = record["training"]
        text = (
            f"shadow training {args.models} models x {args.epochs} epoch(s): one at a time "
            f"{tr['one-at-a-time']['seconds']:.1f}s, {args.k} at once {tr[f'{args.k}-at-once']['seconds']:.1f}s "
            f"({tr['speedup']:.2f}x, bit-identical {tr['bit_identical']}); " + text
        )
    if "experiment" in record:
        text += f"; experiment wall {record['experiment']['timings']['wall_s']:.0f}s"
    print(f"mia: {text} -> {path}")
    return record


if __name__ == "__main__":
    main()
