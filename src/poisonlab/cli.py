"""Command line: parse arguments -> load config -> call an experiment. Errors become one line, exit 2."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from poisonlab.attacks.federated.inversion.commands import add_invert_parser, run_invert
from poisonlab.attacks.inference.commands import add_mia_parser, run_mia
from poisonlab.attacks.inference.privacy_commands import (
    add_attribute_parser,
    add_canary_parser,
    run_attribute,
    run_canary,
)
from poisonlab.attacks.poisoning.commands import (
    add_craft_parser,
    add_evaluate_parser,
    add_trials_curve_parser,
    add_trials_parser,
    run_craft,
    run_evaluate_poisons,
    run_trials_command,
    run_trials_curve,
)
from poisonlab.attacks.poisoning.protect_commands import (
    add_evaluate_protection_parser,
    add_protect_parser,
    run_evaluate_protection,
    run_protect,
)
from poisonlab.defenses.dp.commands import add_epsilon_parser, run_epsilon
from poisonlab.defenses.dp.impact_commands import (
    add_disparate_impact_parser,
    add_privacy_audit_parser,
    run_disparate_impact,
    run_privacy_audit,
)
from poisonlab.diagnostics.commands import (
    add_diagnose_parser,
    add_diagnose_study_parser,
    run_diagnose,
    run_diagnose_study,
)
from poisonlab.errors import Interrupted, PoisonlabError
from poisonlab.experiments.audit.commands import add_audit_parser, run_audit
from poisonlab.experiments.reproduce import add_reproduce_parser, run_reproduce
from poisonlab.experiments.results_commands import add_results_parser, run_results
from poisonlab.fl.commands import add_fl_parser, run_fl

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="YAML", help="experiment config file (see recipes/)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field, e.g. --set train.lr=0.05 (repeatable)",
    )
    p.add_argument("--dataset", help="shortcut for --set data.name=...")
    p.add_argument("--data-root", help="shortcut for --set data.root=... (on-disk datasets)")
    p.add_argument("--model", help="shortcut for --set model.name=...")
    p.add_argument("--epochs", type=int, help="shortcut for --set train.epochs=...")
    p.add_argument("--seed", type=int, help="shortcut for --set seed=...")
    p.add_argument("--threads", type=int, help="shortcut for --set runtime.threads=...")
    p.add_argument("--device", help="shortcut for --set runtime.device=... (auto, cpu, cuda)")


def _add_sweep_args(p: argparse.ArgumentParser) -> None:
    from poisonlab.experiments.sweep import add_sweep_arguments

    add_sweep_arguments(p)


def _cmd_sweep(experiment: str, args: argparse.Namespace, overrides: list[str]) -> int:
    from poisonlab.experiments.sweep import run_sweep_command

    return run_sweep_command(experiment, args, overrides)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="poisonlab",
        description="Red-team ML training pipelines: poisoning, backdoors, privacy leakage and defenses.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sub.add_parser("datasets", help="list datasets: which are available and where to put the others")

    tr = sub.add_parser(
        "train",
        help="train a model with a recipe, evaluate it and write a report",
        description="Train (resuming from WORKDIR if a previous run was interrupted), "
        "evaluate on the test split, save the model and write WORKDIR/report/index.html.",
    )
    _add_config_args(tr)
    tr.add_argument("--workdir", required=True, help="folder for checkpoints, the model, results and the report")
    tr.add_argument("--force-new", action="store_true", help="discard checkpoints of an earlier run in WORKDIR")
    tr.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_sweep_args(tr)

    bd = sub.add_parser(
        "backdoor",
        help="backdoor a victim (data poisoning or blind loss compromise) and measure ASR and clean accuracy",
        description="Train backdoored victims and clean controls with the same seeds, then report the attack "
        "success rate (triggered non-target test inputs classified as the target), clean accuracy with 95% "
        "intervals, a trigger artifact and a PNG of triggered examples in WORKDIR/report/. "
        "Flags below are shortcuts for --set backdoor.<field>=...; see recipes/backdoor-*.yaml.",
    )
    _add_config_args(bd)
    bd.add_argument("--workdir", required=True, help="folder for checkpoints, victims, results and the report")
    for flag, meta, text in (
        ("--mode", "MODE", "data (dirty-label poisoning) or blind (compromised loss computation)"),
        ("--trigger", "KIND", "patch, blend, pixel or pattern"),
        ("--task", "TASK", "blind mode: backdoor, covert or semantic"),
        ("--poison-fraction", "F", "data mode: fraction of the training set poisoned, 0..1 (e.g. 0.05 or 1/20)"),
        ("--target-class", "C", "the backdoor label"),
        ("--balance", "HOW", "blind mode: mgda or fixed loss weights"),
        ("--victims", "N", "victims (and controls) trained, seeds SEED..SEED+N-1"),
    ):
        bd.add_argument(flag, metavar=meta, help=text)
    bd.add_argument("--no-control", action="store_true", help="skip the clean control models")
    bd.add_argument("--dryrun", action="store_true", help="tiny smoke run: 64 training samples, 1 epoch, 1 victim")
    bd.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_sweep_args(bd)

    add_craft_parser(sub)
    add_evaluate_parser(sub)
    add_trials_parser(sub)
    add_trials_curve_parser(sub)
    add_epsilon_parser(sub)
    add_fl_parser(sub)
    add_disparate_impact_parser(sub)
    add_privacy_audit_parser(sub)
    add_protect_parser(sub)
    add_evaluate_protection_parser(sub)
    add_mia_parser(sub)
    add_attribute_parser(sub)
    add_canary_parser(sub)
    add_audit_parser(sub)
    add_results_parser(sub)
    add_reproduce_parser(sub)
    add_invert_parser(sub)
    add_diagnose_parser(sub)
    add_diagnose_study_parser(sub)

    ev = sub.add_parser("evaluate", help="evaluate the model trained in WORKDIR")
    ev.add_argument("workdir", help="a folder written by 'poisonlab train'")
    ev.add_argument("--split", choices=["test", "train"], default="test")
    return parser


def _overrides(args: argparse.Namespace) -> list[str]:
    out = list(args.overrides)
    for flag, key in (
        ("dataset", "data.name"),
        ("data_root", "data.root"),
        ("model", "model.name"),
        ("epochs", "train.epochs"),
        ("seed", "seed"),
        ("threads", "runtime.threads"),
        ("device", "runtime.device"),
    ):
        value = getattr(args, flag, None)
        if value is not None:
            out.append(f"{key}={value}")
    return out


def _print_table(rows: Sequence[tuple[str, Any]]) -> None:
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        shown = f"{v:.4f}" if isinstance(v, float) else str(v)
        print(f"  {k:<{width}}  {shown}")


def _cmd_datasets(_: argparse.Namespace) -> int:
    from poisonlab.data.registry import DATASETS, dataset_names, default_root

    for name in dataset_names():
        spec = DATASETS[name]
        where = "embedded" if spec.embedded else f"put {spec.files} in {default_root(name)}/"
        print(f"{name:<14} {spec.description}\n{'':<14} {where}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from poisonlab.config import load_config
    from poisonlab.experiments.job import apply_runtime, stop_on_signals
    from poisonlab.experiments.train import train_experiment

    if args.sweep:
        return _cmd_sweep("train", args, _overrides(args))
    config = load_config(args.config, _overrides(args))
    apply_runtime(config.runtime)
    t0 = time.perf_counter()
    with stop_on_signals() as should_stop:
        row = train_experiment(
            config, args.workdir, progress=not args.quiet, force_new=args.force_new, should_stop=should_stop
        )
    wall = time.perf_counter() - t0
    m = row["metrics"]
    print(
        f"poisonlab train: {config.model.name} on {config.data.name}, seed {config.seed}, config {row['config_hash']}"
    )
    _print_table(
        [
            ("test accuracy", m["test_accuracy"]),
            ("test loss", m["test_loss"]),
            ("train accuracy", m["train_accuracy"]),
            ("epochs", config.train.epochs),
            ("training time (s)", f"{row['train_seconds']:.1f}"),
            ("wall time (s)", f"{wall:.1f}"),
            ("device / threads", f"{row['environment']['device']} / {row['environment']['threads']}"),
        ]
    )
    print(f"report: {row['report']}")
    return 0


def _cmd_backdoor(args: argparse.Namespace) -> int:
    from poisonlab.attacks.backdoor.config import load_backdoor_config
    from poisonlab.experiments.backdoor import backdoor_experiment
    from poisonlab.experiments.job import apply_runtime, stop_on_signals

    overrides = _overrides(args)
    for flag in ("mode", "trigger", "task", "poison_fraction", "target_class", "balance", "victims"):
        value = getattr(args, flag)
        if value is not None:
            overrides.append(f"backdoor.{flag}={value}")
    if args.no_control:
        overrides.append("backdoor.control=false")
    if args.sweep:
        return _cmd_sweep("backdoor", args, overrides)
    config = load_backdoor_config(args.config, overrides)
    apply_runtime(config.runtime)
    with stop_on_signals() as should_stop:
        row = backdoor_experiment(
            config, args.workdir, progress=not args.quiet, dryrun=args.dryrun, should_stop=should_stop
        )
    s, b = row["summary"], config.backdoor

    def iv(d: dict[str, float] | None) -> str:
        return "-" if d is None else f"{d['mean']:.4f} [{d['lo']:.4f}, {d['hi']:.4f}]"

    what = b.trigger if b.mode == "data" else f"{b.task} ({b.trigger}, {b.balance})"
    print(f"poisonlab backdoor: {b.mode} {what} -> class {b.target_class}, {config.model.name} on {config.data.name}")
    pooled = s["backdoor_pooled"]
    _print_table(
        [
            ("backdoor success (pooled)", f"{pooled['rate']:.4f} [{pooled['lo']:.4f}, {pooled['hi']:.4f}] Wilson"),
            ("clean accuracy (victim)", iv(s["clean_accuracy"])),
            ("clean accuracy (control)", iv(s.get("control_accuracy"))),
            ("accuracy drop", iv(s.get("accuracy_drop"))),
            ("seeds", ", ".join(str(v) for v in s["seeds"])),
        ]
    )
    print(f"report: {row['report']}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from poisonlab.experiments.train import evaluate_workdir

    if not Path(args.workdir).is_dir():
        raise PoisonlabError(f"{args.workdir}: no such workdir")
    res = evaluate_workdir(args.workdir, args.split)
    print(f"poisonlab evaluate: {args.workdir} on {res['dataset']} ({res['split']})")
    _print_table([("accuracy", res["accuracy"]), ("loss", res["loss"]), ("samples", int(res["n"]))])
    return 0


COMMANDS = {
    "datasets": _cmd_datasets,
    "train": _cmd_train,
    "backdoor": _cmd_backdoor,
    "craft": run_craft,
    "evaluate-poisons": run_evaluate_poisons,
    "trials": run_trials_command,
    "trials-curve": run_trials_curve,
    "epsilon": run_epsilon,
    "fl": run_fl,
    "disparate-impact": run_disparate_impact,
    "privacy-audit": run_privacy_audit,
    "protect": run_protect,
    "evaluate-protection": run_evaluate_protection,
    "mia": run_mia,
    "attribute-inference": run_attribute,
    "canary": run_canary,
    "audit": run_audit,
    "results": run_results,
    "reproduce": run_reproduce,
    "invert": run_invert,
    "diagnose": run_diagnose,
    "diagnose-study": run_diagnose_study,
    "evaluate": _cmd_evaluate,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (0 ok, 2 bad input, 130 interrupted after checkpointing)."""
    args = _parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except Interrupted as err:
        print(f"poisonlab: interrupted: {err}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except PoisonlabError as err:
        print(f"poisonlab: error: {err}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
