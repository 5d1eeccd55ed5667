"""CLI command bodies for ``poisonlab craft`` and ``poisonlab evaluate-poisons`` (wired in by cli.py).

    poisonlab craft --recipe gradient-matching --dataset mnist5k --model convnet --eps 16/255 \\
        --budget 0.01 --target-id N --adv-class C --workdir W
    poisonlab evaluate-poisons W --victims K
    poisonlab trials --recipe gradient-matching --eps 128/255 --trials 10 --victims 2 --workdir T
    poisonlab trials-curve T1 T2 ... --out C [--over eps|budget]

Every flag is a shortcut for ``--set <field>=...``; errors are PoisonlabError with one-line messages.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from poisonlab.cli_shortcuts import add_config_arguments, data_shortcuts, runtime_shortcuts, shortcut_overrides
from poisonlab.errors import PoisonlabError

_SHORTCUTS = (  # (flag, metavar, config key, help)
    *data_shortcuts(),
    ("--model", "NAME", "model.name", "surrogate and victim architecture"),
    ("--width", "W", "model.width", "model width"),
    ("--epochs", "N", "train.epochs", "epochs of the victim recipe (surrogates use it too)"),
    *runtime_shortcuts(),
    ("--recipe", "NAME", "poison.recipe", "gradient-matching, metapoison or feature-collision"),
    ("--scenario", "S", "poison.scenario", "from-scratch, fine-tune or transfer"),
    ("--eps", "EPS", "poison.eps", "l-inf radius in pixel01 units, e.g. 16/255"),
    ("--budget", "F", "poison.budget", "fraction of the training set perturbed, e.g. 0.01"),
    ("--poison-count", "N", "poison.poison_count", "exact number of poisons (overrides --budget)"),
    ("--threat-model", "TM", "poison.threat_model", "single-class, third-party or random-subset"),
    ("--selection", "HOW", "poison.selection", "random or gradient-norm"),
    ("--adv-class", "C", "poison.adv_class", "class the target should be assigned"),
    ("--restarts", "R", "poison.restarts", "crafting restarts (lowest loss kept)"),
    ("--steps", "M", "poison.steps", "signed-Adam steps per restart"),
    ("--ensemble", "E", "poison.ensemble", "surrogate models the loss is averaged over"),
    ("--retrain-every", "N", "poison.retrain_every", "retrain surrogates on the poisons every N steps"),
)


def add_craft_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``craft`` to the CLI's subparsers."""
    p = subparsers.add_parser(
        "craft",
        help="craft clean-label poisons (gradient matching, MetaPoison, feature collision) against a target",
        description="Train surrogate(s) on clean data with the victim recipe, choose poisons and craft them "
        "(resuming from WORKDIR if interrupted); writes WORKDIR/poisons (artifact) and WORKDIR/report/. "
        "Recipes: gradient-matching (Witches' Brew), metapoison, feature-collision (Poison Frogs); scenarios: "
        "from-scratch, fine-tune, transfer.",
    )
    add_config_arguments(p, _SHORTCUTS, "experiment config file with a 'poison:' section")
    p.add_argument("--target-id", action="append", type=int, metavar="ID", help="test-split id of a target")
    p.add_argument("--no-augment", action="store_true", help="no differentiable augmentation while crafting")
    p.add_argument("--workdir", required=True, help="folder for surrogates, checkpoints, poisons and the report")
    p.add_argument("--force-new", action="store_true", help="discard checkpoints and surrogates in WORKDIR")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def craft_overrides(args: argparse.Namespace) -> list[str]:
    """The ``--set`` overrides for the parsed craft arguments."""
    out = shortcut_overrides(args, _SHORTCUTS)
    if args.target_id:
        out.append(f"poison.target_ids=[{', '.join(str(i) for i in args.target_id)}]")
    if args.no_augment:
        out.append("poison.augment=false")
    return out


def run_craft(args: argparse.Namespace) -> int:
    """Body of ``poisonlab craft``; returns the exit code."""
    from poisonlab.attacks.poisoning.config import load_poisoning_config
    from poisonlab.attacks.poisoning.experiment import craft_experiment
    from poisonlab.experiments.job import apply_runtime, stop_on_signals

    config = load_poisoning_config(args.config, craft_overrides(args))
    apply_runtime(config.runtime)
    t0 = time.perf_counter()
    with stop_on_signals() as should_stop:
        row = craft_experiment(
            config, args.workdir, progress=not args.quiet, force_new=args.force_new, should_stop=should_stop
        )
    m, p = row["metrics"], config.poison
    print(f"poisonlab craft: {p.recipe}, {config.model.name} on {config.data.name}, config {row['config_hash']}")
    _print_table(
        [
            ("targets (test ids)", ", ".join(str(i) for i in row["target_ids"])),
            ("adversarial class", m["adv_class"]),
            ("poisons", f"{m['poisons']} ({p.threat_model}, {p.selection})"),
            ("eps", f"{p.eps:.6g} ({p.eps * 255:.3g}/255)"),
            ("max |delta|", f"{m['max_abs_delta']:.6g}"),
            ("matching loss per restart", ", ".join(f"{v:.4f}" for v in m["restart_losses"])),
            ("surrogate target prediction", ", ".join(str(s["target_predictions"]) for s in row["surrogates"])),
            ("wall time (s)", f"{time.perf_counter() - t0:.1f}"),
        ]
    )
    print(f"poisons: {Path(args.workdir) / 'poisons'}\nreport: {row['report']}")
    return 0


def add_evaluate_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``evaluate-poisons`` to the CLI's subparsers."""
    p = subparsers.add_parser(
        "evaluate-poisons",
        help="retrain fresh victims on crafted poisons and on a random-noise control; report poison success",
        description="Retrain K victims (new seeds) on WORKDIR's poisoned training set, K on uniform noise of "
        "the same eps at the same ids and K on the clean data; victims already in the result store are skipped.",
    )
    p.add_argument("workdir", help="a folder written by 'poisonlab craft'")
    p.add_argument("--victims", type=int, default=4, metavar="K", help="victims per arm (default 4)")
    p.add_argument("--no-control", action="store_true", help="skip the random-noise control arm")
    p.add_argument("--no-clean", action="store_true", help="skip the clean (unpoisoned) arm")
    add_victim_set(p)
    p.add_argument("--threads", type=int, help="CPU threads")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def add_victim_set(p: argparse.ArgumentParser) -> None:
    """``--victim-set KEY=VALUE``: the victims' own ``train.*``/``model.*`` values (grey-box victims)."""
    p.add_argument(
        "--victim-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="train the victims with another train.*/model.* value than the surrogates (grey box), e.g. "
        "train.epochs=20; repeatable",
    )


def check_victim_args(args: argparse.Namespace) -> None:
    """Shared checks of the commands that retrain victims from a workdir: it exists, ``--victims`` is
    positive; ``--threads`` is applied."""
    if not Path(args.workdir).is_dir():
        raise PoisonlabError(f"{args.workdir}: no such workdir")
    if args.victims < 1:
        raise PoisonlabError(f"--victims: expected a positive number, got {args.victims}")
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)


def run_evaluate_poisons(args: argparse.Namespace) -> int:
    """Body of ``poisonlab evaluate-poisons``; returns the exit code."""
    from poisonlab.attacks.poisoning.experiment import evaluate_poisons_experiment

    check_victim_args(args)
    out = evaluate_poisons_experiment(
        args.workdir, args.victims, not args.no_control, progress=not args.quiet, clean=not args.no_clean,
        victim_overrides=args.victim_set,
    )  # fmt: skip
    print(f"poisonlab evaluate-poisons: {args.workdir}, {out['poisons']} poisons -> class {out['adv_class']}")
    rows: list[tuple[str, Any]] = []
    for arm, v in out["summary"].items():
        s = v["success"]
        rows.append((f"{arm}: success", f"{s['rate']:.3f} [{s['lo']:.3f}, {s['hi']:.3f}] ({s['successes']}/{s['n']})"))
        rows.append((f"{arm}: clean accuracy", f"{v['clean_accuracy']:.4f}"))
    _print_table(rows)
    print(f"report: {out['report']}")
    return 0


def add_trials_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``trials`` to the CLI's subparsers."""
    p = subparsers.add_parser(
        "trials",
        help="run T independent poisoning trials (random target, adversarial class, poison seed) end to end",
        description="Trial t crafts with root seed SEED+t in WORKDIR/trial-<t> and retrains K victims per arm "
        "(poisoned, random-noise control, clean); one result row per trial; a rerun resumes.",
    )
    add_config_arguments(p, _SHORTCUTS, "experiment config file with a 'poison:' section")
    p.add_argument("--no-augment", action="store_true", help="no differentiable augmentation while crafting")
    p.add_argument("--trials", type=int, default=10, metavar="T", help="independent trials (default 10)")
    p.add_argument("--victims", type=int, default=2, metavar="K", help="victims per arm and trial (default 2)")
    p.add_argument("--no-control", action="store_true", help="skip the random-noise control arm")
    p.add_argument("--no-clean", action="store_true", help="skip the clean arm")
    add_victim_set(p)
    p.add_argument("--workdir", required=True, help="folder for the trials, their results and the report")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def run_trials_command(args: argparse.Namespace) -> int:
    """Body of ``poisonlab trials``; returns the exit code."""
    from poisonlab.attacks.poisoning.config import load_poisoning_config
    from poisonlab.attacks.poisoning.trials import run_trials
    from poisonlab.experiments.job import apply_runtime, stop_on_signals

    if args.trials < 1 or args.victims < 1:
        raise PoisonlabError("--trials and --victims: expected positive numbers")
    args.target_id = None
    config = load_poisoning_config(args.config, craft_overrides(args))
    apply_runtime(config.runtime)
    with stop_on_signals() as should_stop:
        out = run_trials(
            config, args.workdir, args.trials, args.victims, not args.no_control, not args.no_clean,
            progress=not args.quiet, should_stop=should_stop, victim_overrides=args.victim_set,
        )  # fmt: skip
    s, p = out["summary"], config.poison
    print(f"poisonlab trials: {p.recipe} ({p.scenario}), eps {p.eps * 255:.3g}/255, {s['trials']} trials")
    rows: list[tuple[str, Any]] = []
    for arm in ("poisoned", "control", "clean"):
        if arm in s:
            v = s[arm]["success"]
            shown = f"{v['rate']:.3f} [{v['lo']:.3f}, {v['hi']:.3f}] ({v['successes']}/{v['n']})"
            rows.append((f"{arm}: success", shown))
            rows.append((f"{arm}: clean accuracy", f"{s[arm]['clean_accuracy']['mean']:.4f}"))
    if "accuracy_drop" in s:
        d = s["accuracy_drop"]
        rows.append(("accuracy drop (clean - poisoned)", f"{d['mean']:.4f} [{d['lo']:.4f}, {d['hi']:.4f}]"))
    if "margin_shift_vs_control" in s:
        d = s["margin_shift_vs_control"]
        rows.append(("target margin shift past noise", f"{d['mean']:.2f} [{d['lo']:.2f}, {d['hi']:.2f}] logits"))
    _print_table(rows)
    print(f"report: {out['report']}")
    return 0


def add_trials_curve_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``trials-curve`` to the CLI's subparsers."""
    p = subparsers.add_parser(
        "trials-curve",
        help="pool the trials of several `poisonlab trials` runs into success and margin shift against eps or budget",
        description="Runs with the same config apart from the axis (eps, or the poison budget) and the root seed "
        "pool into one curve, one point per eps or budget; a trial (seed) seen in two runs counts once. Writes "
        "OUT/index.html, curve.png and curve.json.",
    )
    p.add_argument("workdirs", nargs="+", metavar="T", help="trials workdirs (or their report*/result.json files)")
    p.add_argument("--out", required=True, help="folder for the curve report")
    p.add_argument(
        "--over",
        choices=["eps", "budget"],
        default="eps",
        help="the curve's axis: the l-inf radius (default) or the poison budget (fraction of the training set)",
    )
    return p


def run_trials_curve(args: argparse.Namespace) -> int:
    """Body of ``poisonlab trials-curve``; returns the exit code."""
    from poisonlab.attacks.poisoning.budget_curve import budget_curves, load_results, markdown, write_curve_report

    curves = budget_curves(load_results(args.workdirs), over=args.over)
    report = write_curve_report(curves, args.out)
    print(f"poisonlab trials-curve: {len(curves)} curve(s) from {len(args.workdirs)} run(s)")
    print(markdown(curves, per_trial=True))
    print(f"report: {report}")
    return 0


def _print_table(rows: list[tuple[str, Any]]) -> None:
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")
