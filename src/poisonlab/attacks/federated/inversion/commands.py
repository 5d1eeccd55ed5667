"""CLI command body for ``poisonlab invert`` (wired in by cli.py).

    poisonlab invert --dataset mnist5k --model convnet --batch-size 1 --restarts 1 --iterations 4000 --workdir W
    poisonlab invert --dataset photos --attack dlg --trials 8 --workdir W
    poisonlab invert --dataset mnist5k --model mlp --attack analytic --workdir W

Every flag is a shortcut for ``--set <field>=...``; errors are PoisonlabError with one-line messages.
"""

from __future__ import annotations

import argparse
from typing import Any

from poisonlab.cli_shortcuts import add_config_arguments, data_shortcuts, runtime_shortcuts, shortcut_overrides
from poisonlab.experiments.sweep import add_sweep_arguments, run_sweep_command

_SHORTCUTS = (  # (flag, metavar, config key, help)
    *data_shortcuts("dataset the private images come from (see 'poisonlab datasets')"),
    ("--model", "NAME", "model.name", "architecture the server sends (convnet, mlp, lenet, resnet18)"),
    ("--width", "W", "model.width", "model width"),
    ("--norm", "KIND", "model.norm", "batch, group or none"),
    *runtime_shortcuts("root seed (model init, batch choice, attack initialisation)"),
    ("--attack", "NAME", "invert.attack", "inverting-gradients (default), dlg, idlg or analytic"),
    ("--batch-size", "B", "invert.batch_size", "images per client update"),
    ("--trials", "T", "invert.trials", "independent client updates attacked"),
    ("--restarts", "R", "invert.restarts", "restarts per update (lowest matching cost kept)"),
    ("--iterations", "N", "invert.iterations", "optimiser steps (default 4000 for inverting-gradients, 500 DLG)"),
    ("--lr", "LR", "invert.lr", "step size (default 0.1 signed Adam; 1 for L-BFGS)"),
    ("--tv", "W", "invert.tv", "total-variation weight (default 1e-4)"),
    ("--labels", "RULE", "invert.labels", "label recovery: auto, idlg, bias-sign or weight-min"),
    ("--local-steps", "N", "invert.local_steps", "0: the client sends a gradient; N: a FedAvg delta after N steps"),
    ("--local-lr", "LR", "invert.local_lr", "FedAvg local learning rate (default 1e-4)"),
    ("--images-per-step", "K", "invert.images_per_step", "FedAvg images per local step (default: all)"),
)


def add_invert_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``invert`` to the CLI's subparsers."""
    p = subparsers.add_parser(
        "invert",
        help="gradient inversion: reconstruct a client's images from its federated update",
        description="Draw private batches, compute each client's update (gradient, or FedAvg delta with "
        "--local-steps) against the server's model, and reconstruct the images from the update alone with "
        "Inverting Gradients (cosine + TV, signed Adam, restarts), DLG/iDLG (L-BFGS) or analytic FC recovery. "
        "Writes WORKDIR/reconstructions/ (artifacts), WORKDIR/report/grid.png and WORKDIR/results.json; "
        "resumes from WORKDIR/checkpoints if interrupted.",
    )
    add_config_arguments(p, _SHORTCUTS, "experiment config file with an 'invert:' section")
    p.add_argument("--share-labels", action="store_true", help="the client reveals its labels")
    p.add_argument("--workdir", required=True, help="folder for checkpoints, reconstructions and the report")
    p.add_argument("--force-new", action="store_true", help="discard checkpoints of an earlier run in WORKDIR")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_sweep_arguments(p)
    return p


def invert_overrides(args: argparse.Namespace) -> list[str]:
    """The ``--set`` overrides for the parsed invert arguments."""
    out = shortcut_overrides(args, _SHORTCUTS)
    if args.share_labels:
        out.append("invert.share_labels=true")
    return out


def run_invert(args: argparse.Namespace) -> int:
    """Body of ``poisonlab invert``; returns the exit code."""
    if args.sweep:
        return run_sweep_command("invert", args, invert_overrides(args))
    from poisonlab.attacks.federated.inversion.config import load_invert_config
    from poisonlab.attacks.federated.inversion.experiment import invert_experiment
    from poisonlab.experiments.job import apply_runtime, stop_on_signals

    config = load_invert_config(args.config, invert_overrides(args))
    apply_runtime(config.runtime)
    with stop_on_signals() as should_stop:
        row = invert_experiment(
            config, args.workdir, progress=not args.quiet, force_new=args.force_new, should_stop=should_stop
        )
    inv, m = config.invert, row["metrics"]
    what = "gradient" if inv.local_steps == 0 else f"FedAvg delta ({inv.local_steps} steps at lr {inv.local_lr:g})"
    print(
        f"poisonlab invert: {inv.attack} on {config.model.name} / {config.data.name}, {what}, "
        f"batch {inv.batch_size}, {inv.trials} update(s), config {row['config_hash']}"
    )

    def ci(key: str) -> str:
        lo_hi = m.get(f"{key}_ci95")
        return f" [{lo_hi[0]:.3f}, {lo_hi[1]:.3f}] 95% t" if lo_hi else ""

    rows = [
        ("PSNR (dB, mean)", f"{m['psnr_mean']:.2f}{ci('psnr')}"),
        ("SSIM (mean)", f"{m['ssim_mean']:.4f}{ci('ssim')}"),
        ("MSE (mean)", f"{m['mse_mean']:.3g}"),
        ("labels recovered", f"{m['label_accuracy']:.3f}"),
        ("images", str(m["images"])),
        ("attack time (s)", f"{m['seconds']:.1f} ({m['seconds_per_image']:.1f} per image)"),
    ]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")
    print(f"grid: {row['grid']}")
    return 0
