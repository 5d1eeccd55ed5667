"""CLI command bodies for ``poisonlab attribute-inference`` and ``poisonlab canary`` (wired in by cli.py).

    poisonlab attribute-inference --attribute religious --replicas 4 --label-strategy wrong_label \\
        --trials 3 --workdir W
    poisonlab canary --replicas 16 --continuation padding --trials 3 --workdir W

Both run a clean and a Truth-Serum-poisoned arm on the same seeds and write ``W/results.json``,
``W/results.sqlite`` (one row per trial; a rerun resumes) and ``W/report/{index.html, plot.png}``.
Every flag is a shortcut for ``--set <field>=...``.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from poisonlab.cli_shortcuts import add_config_arguments, shortcut_overrides

_COMMON = (  # (flag, metavar, config key, help)
    ("--seed", "S", "seed", "root seed of trial 0 (trial t uses S+t)"),
    ("--trials", "T", "trials", "independent trials"),
    ("--threads", "N", "runtime.threads", "CPU threads"),
)
_ATTRIBUTE = (
    ("--dataset", "NAME", "data.name", "tabular dataset (fair)"),
    ("--attribute", "NAME", "attack.attribute", "sensitive categorical attribute to infer"),
    ("--targets", "N", "attack.targets", "target records per trial"),
    ("--replicas", "R", "attack.replicas_per_candidate", "poisoned copies per completion in the poisoned arm"),
    ("--label-strategy", "S", "attack.poison_label_strategy", "wrong_label or true_label"),
    ("--references", "K", "attack.reference_models", "reference models for the calibrated attack (0 = none)"),
    ("--epochs", "N", "train.epochs", "epochs of the victim (and reference) recipe"),
    ("--width", "W", "model.width", "MLP width"),
)
_CANARY = (
    ("--prefix", "TEXT", "canary.prefix", "text before the secret"),
    ("--digits", "D", "canary.digits", "secret digits (10**D candidates)"),
    ("--canary-repeats", "N", "canary.canary_repeats", "copies of the canary in the training text"),
    ("--replicas", "R", "canary.replicas", "poison lines in the poisoned arm"),
    ("--continuation", "C", "canary.poison_continuation", "padding or random"),
    ("--references", "K", "canary.reference_models", "reference LMs without the canary (0 = none)"),
    ("--epochs", "N", "train.epochs", "LM training epochs"),
    ("--max-chars", "N", "max_train_chars", "training text: the first N characters of the corpus"),
)


def _add(p: argparse.ArgumentParser, shortcuts: tuple[tuple[str, str, str, str], ...]) -> None:
    add_config_arguments(p, _COMMON + shortcuts, "experiment config file")
    p.add_argument("--workdir", required=True, help="folder for checkpoints, results and the report")
    p.add_argument("--dryrun", action="store_true", help="tiny smoke run (seconds)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _overrides(args: argparse.Namespace, shortcuts: tuple[tuple[str, str, str, str], ...]) -> list[str]:
    return shortcut_overrides(args, _COMMON + shortcuts)


def add_attribute_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``attribute-inference`` to the CLI's subparsers."""
    p = subparsers.add_parser(
        "attribute-inference",
        help="infer a sensitive attribute of training records, with and without Truth Serum poisoning",
        description="Train victims (and reference models) on the tabular dataset with and without poisoned "
        "completions of the targets, query every completion and infer the attribute; reports accuracy with "
        "95%% intervals for the confidence and the reference-calibrated attacks.",
    )
    _add(p, _ATTRIBUTE)
    return p


def add_canary_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``canary`` to the CLI's subparsers."""
    p = subparsers.add_parser(
        "canary",
        help="measure a canary secret's exposure in a character LM, with and without Truth Serum poisoning",
        description="Insert a canary (prefix + random secret) into the help-topics corpus, train character "
        "LMs with and without poison lines (prefix + other continuations), rank the secret among all "
        "candidates; reports exposure and extraction rate with 95%% intervals.",
    )
    _add(p, _CANARY)
    return p


def _print(rows: list[list[Any]], header: list[str]) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    for r in [header, *rows]:
        print("  " + "  ".join(str(x).ljust(w) for x, w in zip(r, widths)))


def run_attribute(args: argparse.Namespace) -> int:
    """Body of ``poisonlab attribute-inference``; returns the exit code."""
    from poisonlab.attacks.inference.attribute_experiment import (
        dryrun_config,
        load_attribute_config,
        run_attribute_experiment,
    )
    from poisonlab.attacks.inference.privacy_report import ATTRIBUTE_HEADER, attribute_rows
    from poisonlab.experiments.job import apply_runtime, stop_on_signals

    config = load_attribute_config(args.config, _overrides(args, _ATTRIBUTE))
    if args.dryrun:
        config = dryrun_config(config)
    apply_runtime(config.runtime)
    t0 = time.perf_counter()
    with stop_on_signals() as should_stop:
        out = run_attribute_experiment(config, args.workdir, progress=not args.quiet, should_stop=should_stop)
    a, s = config.attack, out["summary"]
    print(
        f"poisonlab attribute-inference: {a.attribute} ({len(out['attribute_values'])} values) on "
        f"{config.data.name}, {s['trials']} trials x {a.targets} targets, poisoned arm: "
        f"{a.replicas_per_candidate} replicas/candidate ({a.poison_label_strategy})"
    )
    _print(attribute_rows(s), ATTRIBUTE_HEADER)
    print(f"  majority-value guess {s['prior_accuracy']:.3f}; wall time {time.perf_counter() - t0:.1f}s")
    print(f"report: {out['report']}")
    return 0


def run_canary(args: argparse.Namespace) -> int:
    """Body of ``poisonlab canary``; returns the exit code."""
    from poisonlab.attacks.inference.canary_experiment import dryrun_config, load_canary_config, run_canary_experiment
    from poisonlab.attacks.inference.privacy_report import CANARY_HEADER, canary_rows
    from poisonlab.experiments.job import apply_runtime, stop_on_signals

    config = load_canary_config(args.config, _overrides(args, _CANARY))
    if args.dryrun:
        config = dryrun_config(config)
    apply_runtime(config.runtime)
    t0 = time.perf_counter()
    with stop_on_signals() as should_stop:
        out = run_canary_experiment(config, args.workdir, progress=not args.quiet, should_stop=should_stop)
    c, s = config.canary, out["summary"]
    print(
        f"poisonlab canary: '{c.prefix}' + {c.digits}-digit secret x {c.canary_repeats} copies, "
        f"{s['trials']} trials, poisoned arm: {c.replicas} lines ({c.poison_continuation}); "
        f"max exposure {s['max_exposure']:.2f} bits"
    )
    _print(canary_rows(s), CANARY_HEADER)
    print(f"  wall time {time.perf_counter() - t0:.1f}s")
    print(f"report: {out['report']}")
    return 0
