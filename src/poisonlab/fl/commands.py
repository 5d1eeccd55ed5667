"""CLI command body for ``poisonlab fl`` (wired in by cli.py).

    poisonlab fl --dataset mnist5k --clients 100 --per-round 10 --rounds 30 --attack-round 5 \\
        --attack model-replacement --aggregator fedavg --workdir W

Every flag is a shortcut for ``--set <field>=...`` of :class:`~poisonlab.fl.config.FLExperimentConfig`.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from poisonlab.cli_shortcuts import add_config_arguments, shortcut_overrides
from poisonlab.experiments.sweep import add_sweep_arguments, run_sweep_command

_SHORTCUTS = (  # (flag, metavar, config key, help)
    ("--dataset", "NAME", "data.name", "dataset (see 'poisonlab datasets')"),
    ("--model", "NAME", "model.name", "architecture (no BatchNorm: lenet, mlp, convnet with model.norm=none)"),
    ("--seed", "S", "seed", "root seed"),
    ("--threads", "N", "runtime.threads", "CPU threads"),
    ("--clients", "N", "fl.clients", "total participants"),
    ("--per-round", "N", "fl.per_round", "participants per round"),
    ("--rounds", "R", "fl.rounds", "rounds after pretraining"),
    ("--pretrain-rounds", "P", "fl.pretrain_rounds", "clean FedAvg rounds before (cached in WORKDIR)"),
    ("--eta", "ETA", "fl.eta", "global learning rate"),
    ("--algorithm", "ALG", "fl.algorithm", "fedavg or fedsgd"),
    ("--partition", "HOW", "fl.partition", "dirichlet or iid"),
    ("--engine", "E", "fl.engine", "auto, vmap, sequential or flower"),
    ("--attack", "KIND", "attack.kind", "none, model-replacement or constrain-and-scale"),
    ("--attack-round", "A", "attack.round", "round in which the attacker takes part"),
    ("--task", "TASK", "attack.task", "backdoor task: pattern or semantic"),
    ("--gamma", "G", "attack.gamma", "attacker's scale (default n/eta)"),
    (
        "--aggregator",
        "NAME",
        "aggregator.name",
        "fedavg, clip, dp, median, trimmed-mean, krum, multi-krum, norm-detector",
    ),
    (
        "--norm-bound",
        "S",
        "aggregator.norm_bound",
        "server's norm bound (default: largest benign norm at pretraining end)",
    ),
    ("--noise-multiplier", "Z", "aggregator.noise_multiplier", "DP-FedAvg noise multiplier"),
)


def add_fl_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``fl`` to the CLI's subparsers."""
    p = subparsers.add_parser(
        "fl",
        help="federated learning with a model-replacement backdoor attacker and robust aggregation",
        description="Pretrain a global model with clean FedAvg (cached in WORKDIR), then run R rounds with the "
        "chosen aggregator; in round A a single compromised participant submits a model-replacement or "
        "constrain-and-scale update (Bagdasaryan et al. 2020). Records main-task and backdoor accuracy per round "
        "in WORKDIR/results.sqlite and writes WORKDIR/report/{result.json,curves.png,index.html}. "
        "Resumes from the last completed round after an interruption.",
    )
    add_config_arguments(p, _SHORTCUTS, "experiment config file (sections fl, attack, aggregator)")
    p.add_argument("--workdir", required=True, help="folder for the pretrained model, checkpoints, results and report")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_sweep_arguments(p)
    return p


def fl_overrides(args: argparse.Namespace) -> list[str]:
    """The ``--set`` overrides for the parsed arguments."""
    out = shortcut_overrides(args, _SHORTCUTS)
    return out


def run_fl(args: argparse.Namespace) -> int:
    """Body of ``poisonlab fl``; returns the exit code."""
    if args.sweep:
        return run_sweep_command("fl", args, fl_overrides(args))
    from poisonlab.experiments.job import apply_runtime, stop_on_signals
    from poisonlab.fl.config import load_fl_config
    from poisonlab.fl.experiment import fl_experiment

    config = load_fl_config(args.config, fl_overrides(args))
    apply_runtime(config.runtime)
    t0 = time.perf_counter()
    with stop_on_signals() as should_stop:
        row = fl_experiment(config, args.workdir, progress=not args.quiet, should_stop=should_stop)
    s, a = row["summary"], config.attack

    def pr(p: dict[str, Any]) -> str:
        return f"{p['rate']:.4f} [{p['lo']:.4f}, {p['hi']:.4f}]"

    print(
        f"poisonlab fl: {a.kind} ({a.task}) in round {a.round} vs {config.aggregator.name}, "
        f"{config.fl.clients} clients, {config.fl.per_round}/round, config {row['config_hash']}"
    )
    rows: list[tuple[str, Any]] = [
        ("pretrained main accuracy", f"{s['pretrain_main_accuracy']:.4f}"),
        ("main accuracy before attack", f"{s['main_before']:.4f}"),
        ("main accuracy after attack", pr(s["main_after"]) + " Wilson"),
        ("backdoor accuracy after attack", pr(s["backdoor_after"]) + " Wilson"),
        (f"backdoor accuracy at round {s['rounds']}", pr(s["backdoor_final"])),
    ]
    for key in ("attacker_flagged", "attacker_clipped", "dp_epsilon"):
        if key in s:
            rows.append((key.replace("_", " "), s[key]))
    rows.append(("wall time (s)", f"{time.perf_counter() - t0:.1f}"))
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")
    print(f"report: {row['report']}")
    return 0
