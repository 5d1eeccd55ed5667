"""CLI command bodies for ``poisonlab protect`` and ``poisonlab evaluate-protection`` (wired in by cli.py).

    poisonlab protect --dataset mnist5k --eps 8/255 [--fraction F] [--online --release-batches N] --workdir W
    poisonlab evaluate-protection W --victims K [--models convnet:16,mlp,lenet] [--defense mixup]

Every value flag is a shortcut for ``--set <field>=...``; errors are PoisonlabError with one-line messages.
"""

from __future__ import annotations

import argparse
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import yaml

from poisonlab.cli_shortcuts import add_config_arguments, data_shortcuts, runtime_shortcuts, shortcut_overrides
from poisonlab.errors import ConfigError

_SHORTCUTS = (  # (flag, metavar, config key, help)
    *data_shortcuts(),
    ("--model", "NAME", "model.name", "surrogate architecture"),
    ("--width", "W", "model.width", "surrogate width"),
    ("--epochs", "N", "train.epochs", "epochs of the recipe (surrogates and victims)"),
    *runtime_shortcuts(),
    ("--eps", "EPS", "protect.eps", "l-inf radius in pixel01 units, e.g. 8/255"),
    ("--fraction", "F", "protect.fraction", "fraction of the training set protected (default 1)"),
    ("--method", "METHOD", "protect.method", "alignment (default), adversarial-targeted or adversarial-untargeted"),
    ("--label-map", "MAP", "protect.label_map", "adversarial-targeted: shift (y + 1 mod C, default) or nearest"),
    ("--objective", "LOSS", "protect.objective", "alignment target: reverse-ce (default) or negative-ce"),
    ("--optimizer", "OPT", "protect.optimizer", "signed-adam or pgd (default: the method's reference choice)"),
    ("--restarts", "R", "protect.restarts", "restarts per poison batch (lowest loss kept)"),
    ("--steps", "M", "protect.steps", "optimiser steps per poison batch"),
    ("--pbatch", "B", "protect.pbatch", "samples per poison batch"),
    ("--ensemble", "E", "protect.ensemble", "surrogates the alignment is averaged over"),
    ("--surrogates", "LIST", "protect.surrogates", "mixed ensemble: name[:width[:norm]],... e.g. mlp,convnet:8:none"),
    ("--surrogate-epochs", "N", "protect.surrogate_epochs", "epochs the surrogates train (default: the recipe's)"),
    ("--release-batches", "N", "protect.release_batches", "online: number of release batches"),
    ("--update-epochs", "N", "protect.update_epochs", "online: surrogate epochs between releases"),
)


def add_protect_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``protect`` to the CLI's subparsers."""
    p = subparsers.add_parser(
        "protect",
        help="protect a dataset before release: availability poisons that make models trained on it fail",
        description="Train surrogate(s) on the clean data and perturb the training set (or a fraction) so that "
        "training on it descends the reverse cross-entropy of clean data (--method alignment, secure dataset "
        "release) or learns class-targeted adversarial features (--method adversarial-targeted); resumes from "
        "WORKDIR if interrupted. Writes WORKDIR/protected (artifact) and WORKDIR/report/protected.png.",
    )
    add_config_arguments(p, _SHORTCUTS, "experiment config file with a 'protect:' section")
    p.add_argument("--online", action="store_true", help="protect and release batch by batch, updating surrogates")
    p.add_argument("--stagger", action="store_true", help="member i of the ensemble trains i epochs")
    p.add_argument("--augment", choices=["on", "off"], help="differentiable augmentation (default: as the recipe)")
    p.add_argument("--export-images", action="store_true", help="also write every protected image as a PNG")
    p.add_argument("--workdir", required=True, help="folder for surrogates, checkpoints, the release and report")
    p.add_argument("--force-new", action="store_true", help="discard checkpoints and surrogates in WORKDIR")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def protect_overrides(args: argparse.Namespace) -> list[str]:
    """The ``--set`` overrides for the parsed protect arguments."""
    out = shortcut_overrides(args, _SHORTCUTS)
    if args.online:
        out.append("protect.online=true")
    if args.stagger:
        out.append("protect.stagger=true")
    if args.augment is not None:
        out.append(f"protect.augment={'true' if args.augment == 'on' else 'false'}")
    return out


def run_protect(args: argparse.Namespace) -> int:
    """Body of ``poisonlab protect``; returns the exit code."""
    from poisonlab.attacks.poisoning.protect_config import load_protection_config
    from poisonlab.attacks.poisoning.protect_experiment import protect_experiment
    from poisonlab.experiments.job import apply_runtime, stop_on_signals

    config = load_protection_config(args.config, protect_overrides(args))
    apply_runtime(config.runtime)
    t0 = time.perf_counter()
    with stop_on_signals() as should_stop:
        row = protect_experiment(
            config, args.workdir, not args.quiet, args.force_new, should_stop, export_images=args.export_images
        )
    m, p = row["metrics"], config.protect
    loss_name = {
        "alignment": "alignment loss (1 - cos)",
        "adversarial-targeted": "CE towards (y + 1) mod C" if p.label_map == "shift" else "CE towards pi(y)",
        "adversarial-untargeted": "-CE at the true label",
    }[p.method]
    mode = f"online, {p.release_batches} release batches" if p.online else "offline"
    print(
        f"poisonlab protect: {config.model.name} surrogate on {config.data.name} ({mode}), config {row['config_hash']}"
    )
    _print_table(
        [
            ("protected samples", f"{m['protected']} (fraction {p.fraction:g})"),
            ("eps", f"{p.eps:.6g} ({p.eps * 255:.3g}/255)"),
            ("max |delta|", f"{m['max_abs_delta']:.6g}"),
            ("method", f"{p.method} ({p.crafting_optimizer})"),
            *([("label map pi(0..C-1)", str(m["label_map"]))] if m.get("label_map") else []),
            (f"{loss_name}, mean over batches", f"{m['mean_batch_loss']:.4f}"),
            ("surrogate test accuracy", ", ".join(f"{a:.4f}" for a in m["surrogate_test_accuracy"]) or "-"),
            ("wall time (s)", f"{time.perf_counter() - t0:.1f}"),
        ]
    )
    print(f"release: {Path(args.workdir) / 'protected'}\nreport: {row['report']}")
    return 0


def add_evaluate_protection_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``evaluate-protection`` to the CLI's subparsers."""
    p = subparsers.add_parser(
        "evaluate-protection",
        help="train fresh victims on a protected release, on same-budget noise and on clean data; compare accuracy",
        description="Train K victims per architecture on WORKDIR's protected training set, K on uniform noise of "
        "the same eps at the same ids and K on the clean data (same seeds), and report clean test accuracy with "
        "t intervals over seeds; victims already in the result store are skipped.",
    )
    p.add_argument("workdir", help="a folder written by 'poisonlab protect'")
    p.add_argument("--victims", type=int, default=3, metavar="K", help="victims per architecture and arm (default 3)")
    p.add_argument("--models", metavar="LIST", help="victims, name[:width][@lr] comma-separated (default "
                   "convnet:16,mlp,lenet; +resnet18 on colour data)")  # fmt: skip
    p.add_argument("--defense", metavar="NAME", help="a registered defense every victim trains with, e.g. mixup")
    p.add_argument("--defense-param", action="append", default=[], metavar="KEY=VALUE", help="defense parameter")
    p.add_argument("--no-noise", action="store_true", help="skip the random-noise control arm")
    p.add_argument("--no-clean", action="store_true", help="skip the clean arm")
    p.add_argument("--threads", type=int, help="CPU threads")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def run_evaluate_protection(args: argparse.Namespace) -> int:
    """Body of ``poisonlab evaluate-protection``; returns the exit code."""
    from poisonlab.attacks.poisoning.commands import check_victim_args
    from poisonlab.attacks.poisoning.protect_experiment import evaluate_protection_experiment
    from poisonlab.attacks.poisoning.protection_eval import VictimSpec

    check_victim_args(args)
    models = [VictimSpec.parse(t) for t in args.models.split(",")] if args.models else None
    arms = [a for a, off in (("protected", False), ("noise", args.no_noise), ("clean", args.no_clean)) if not off]
    params = dict(_param(item) for item in args.defense_param)
    out = evaluate_protection_experiment(args.workdir, args.victims, models, arms, args.defense, params,
                                         progress=not args.quiet)  # fmt: skip
    print(f"poisonlab evaluate-protection: {args.workdir}, {out['protected']} protected samples, "
          f"eps {out['eps'] * 255:.3g}/255, defense {out['defense']}")  # fmt: skip
    rows: list[tuple[str, Any]] = []
    for model, entry in out["summary"].items():
        for key, v in entry.items():
            rows.append((f"{model}: {key}", f"{v['mean']:.4f} [{v['lo']:.4f}, {v['hi']:.4f}] (n={v['n']})"))
    _print_table(rows)
    print(f"report: {out['report']}")
    return 0


def _param(item: str) -> tuple[str, Any]:
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--defense-param {item!r}: expected key=value")
    value = yaml.safe_load(raw)
    if isinstance(value, str) and "/" in value:  # ratios such as eps=16/255
        try:
            value = float(Fraction(value))
        except (ValueError, ZeroDivisionError):
            pass
    return key.strip(), value


def _print_table(rows: list[tuple[str, Any]]) -> None:
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")
