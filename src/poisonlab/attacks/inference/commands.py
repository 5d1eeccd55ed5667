"""CLI command body for ``poisonlab mia`` (wired in by cli.py).

    poisonlab mia --dataset mnist5k --model convnet --shadows 16 --workdir W
    poisonlab mia --config recipes/mia-mnist5k.yaml --poison-targets 250 --replicas 8 --workdir W

Every flag is a shortcut for ``--set <field>=...``; errors are PoisonlabError with one-line messages.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from poisonlab.cli_shortcuts import add_config_arguments, data_shortcuts, runtime_shortcuts, shortcut_overrides
from poisonlab.experiments.sweep import add_sweep_arguments, run_sweep_command

_SHORTCUTS = (  # (flag, metavar, config key, help)
    *data_shortcuts(),
    ("--model", "NAME", "model.name", "architecture of every model"),
    ("--width", "W", "model.width", "model width"),
    ("--epochs", "N", "train.epochs", "training epochs"),
    *runtime_shortcuts("root seed (keep-masks, inits, batch orders, targets)"),
    ("--shadows", "N", "mia.shadows", "models, each on a random half of the universe (>= 4)"),
    ("--universe", "U", "mia.universe", "all (train+test splits) or train"),
    ("--poison-targets", "M", "mia.poison_targets", "Truth Serum: targets (0 = no poisoned arm)"),
    ("--replicas", "R", "mia.replicas", "Truth Serum: mislabeled replicas per target"),
    ("--untargeted-share", "F", "mia.untargeted_share", "untargeted arm: attacker's share of the data"),
    ("--query-shift", "S", "mia.query_shift", "query views: shifts up to S pixels (0: the image only)"),
    ("--k-at-once", "K", "mia.k_at_once", "models trained per train_many call"),
    ("--strategy", "HOW", "mia.strategy", "auto, sequential, processes or fused"),
    ("--n-boot", "B", "mia.n_boot", "bootstrap resamples"),
)


def add_mia_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``mia`` to the CLI's subparsers."""
    p = subparsers.add_parser(
        "mia",
        help="membership inference (LiRA, global threshold) on shadow models, optionally with Truth Serum poisons",
        description="Train N models on random halves of the universe (each point IN half of them), score "
        "every point with LiRA (online/offline, fixed/per-example variance) and the global threshold, pooled "
        "over leave-one-model-out rotations; with --poison-targets M, train N more with M*r mislabeled "
        "replicas and compare the targets' leakage. Writes WORKDIR/results.json, WORKDIR/results.sqlite and "
        "WORKDIR/report/roc.png; finished models are reused on a rerun.",
    )
    add_config_arguments(p, _SHORTCUTS, "experiment config file with a 'mia:' section")
    p.add_argument("--workdir", required=True, help="folder for the models, scores, results and the plot")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_sweep_arguments(p)
    return p


def mia_overrides(args: argparse.Namespace) -> list[str]:
    """The ``--set`` overrides for the parsed arguments."""
    out = shortcut_overrides(args, _SHORTCUTS)
    return out


def _pct(v: float) -> str:
    return "-" if v is None or math.isnan(v) else f"{100 * v:.2f}%"


def format_table(row: dict[str, Any]) -> list[str]:
    """The printed summary: one line per (arm, subset, attack) and the amplification factors."""
    lines = [f"{'arm / points / attack':<42} {'AUC':>6} {'TPR@0.1%':>9} {'TPR@1%':>8} {'bal.acc':>8}  negatives"]
    for arm, subsets in row["metrics"].items():
        for subset, attacks in subsets.items():
            for attack, m in attacks.items():
                neg = m["fpr_points"]["0.001"]["n_negatives"]
                lines.append(
                    f"{f'{arm} / {subset} / {attack}':<42} {m['auc']:6.3f} {_pct(m['tpr_at_fpr'].get('0.001')):>9} "
                    f"{_pct(m['tpr_at_fpr'].get('0.01')):>8} {m['balanced_accuracy']:8.3f}  {neg}"
                )
    s = row["summary"]
    if "amplification" in s:
        lines.append("Truth Serum on the targets (poisoned / clean; 95% bootstrap over targets, paired):")
        for attack, amp in s["amplification"].items():
            a, t1 = amp["auc"], amp.get("0.01")
            text = f"  {attack:<20} AUC {a['control']:.3f} -> {a['treated']:.3f} ({a['difference']:+.3f} "
            text += f"[{a['difference_lo']:.3f}, {a['difference_hi']:.3f}])"
            if t1 is not None:
                text += f"; TPR@1% x{t1['ratio']:.2f} [{t1['lo']:.2f}, {t1['hi']:.2f}]"
            lines.append(text)
        c = s["accuracy_cost"]
        lines.append(
            f"accuracy on other held-out points: clean {s['accuracy_clean_others']['mean']:.4f}, poisoned "
            f"{s['accuracy_poisoned_others']['mean']:.4f}, cost {c['mean']:.4f} [{c['lo']:.4f}, {c['hi']:.4f}] t95"
        )
    if "untargeted" in s:
        lines.append("untargeted poisoning, all points: precision of member calls at fixed recall, clean -> poisoned")
        for attack, by_recall in s["untargeted"].items():
            parts = [
                f"recall {r}: {v['clean']:.3f} -> {v['poisoned']:.3f} (false calls x{1 / v['error_ratio']:.2f})"
                for r, v in by_recall.items()
            ]
            lines.append(f"  {attack:<20} " + "; ".join(parts))
        lines.append(f"accuracy on held-out points: untargeted {s['accuracy_untargeted']['mean']:.4f}")
    return lines


def run_mia(args: argparse.Namespace) -> int:
    """Body of ``poisonlab mia``; returns the exit code."""
    if args.sweep:
        return run_sweep_command("mia", args, mia_overrides(args))
    from poisonlab.attacks.inference.mia_config import load_mia_config
    from poisonlab.attacks.inference.mia_experiment import mia_experiment
    from poisonlab.experiments.job import apply_runtime, stop_on_signals

    config = load_mia_config(args.config, mia_overrides(args))
    apply_runtime(config.runtime)
    with stop_on_signals() as should_stop:
        row = mia_experiment(config, args.workdir, progress=not args.quiet, should_stop=should_stop)
    m = config.mia
    print(
        f"poisonlab mia: {config.model.name} on {config.data.name} ({m.universe}, {row['universe_size']} points), "
        f"{m.shadows} models per arm, config {row['config_hash']}"
    )
    for line in format_table(row):
        print(line)
    print(f"wall time (s): {row['timings']['wall_s']:.1f}")
    print(f"results: {Path(args.workdir) / 'results.json'}\nplot: {Path(args.workdir) / 'report' / 'roc.png'}")
    return 0
