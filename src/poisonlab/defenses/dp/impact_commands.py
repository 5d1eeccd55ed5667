"""CLI command bodies for ``poisonlab disparate-impact`` and ``poisonlab privacy-audit`` (wired in by cli.py).

    poisonlab disparate-impact --dataset mnist5k --model convnet --underrepresented-class 8 --keep-fraction 0.1 \\
        --target-epsilon 8 --seeds 3 --workdir W
    poisonlab privacy-audit --dataset mnist5k --model lenet --canaries 500 --noise-levels 0.8,2 --workdir W

Every flag is a shortcut for ``--set <field>=...``; errors are ConfigError with one-line messages.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from poisonlab.cli_shortcuts import add_config_arguments, data_shortcuts, runtime_shortcuts

_COMMON = (  # (flag, metavar, config key, help)
    *data_shortcuts(),
    ("--model", "NAME", "model.name", "architecture (convnet, lenet, mlp; no batch norm under DP-SGD)"),
    ("--width", "W", "model.width", "model width"),
    ("--norm", "NORM", "model.norm", "none (default) or group"),
    ("--epochs", "N", "train.epochs", "epochs of the shared recipe (default 30)"),
    ("--lr", "LR", "train.lr", "learning rate of the shared recipe (default 0.1)"),
    ("--batch-size", "B", "train.batch_size", "(expected) batch size (default 256)"),
    *runtime_shortcuts(),
)
_IMPACT = (
    ("--underrepresented-class", "C", "impact.underrepresented_class", "class cut down (default 8)"),
    ("--keep-fraction", "F", "impact.keep_fraction", "share of class C's training images kept (default 0.1)"),
    ("--seeds", "K", "impact.seeds", "seeds, each training both arms (default 3)"),
    ("--noise", "Z", "impact.dp.noise_multiplier", "DP noise multiplier z (default 0.8)"),
    ("--target-epsilon", "E", "impact.dp.target_epsilon", "calibrate z to this epsilon instead of --noise"),
    ("--clip", "S", "impact.dp.max_grad_norm", "per-example clipping norm (default 1)"),
    ("--delta", "D", "impact.dp.delta", "delta (default 1e-5)"),
    ("--accountant", "NAME", "impact.dp.accountant", "rdp (default) or prv"),
)
_AUDIT = (
    ("--canaries", "M", "audit.canaries", "canaries, each inserted with probability 1/2 (default 500)"),
    ("--canary-kind", "KIND", "audit.canary_kind", "mislabeled (default) or noise"),
    ("--train-size", "N", "audit.train_size", "clean training images used (default 1000)"),
    ("--noise-levels", "Z1,Z2", "audit.noise_levels", "audited noise multipliers (default 0.8,2)"),
    ("--clip", "S", "audit.max_grad_norm", "per-example clipping norm (default 1)"),
    ("--delta", "D", "audit.delta", "delta (default 1e-5)"),
    ("--confidence", "C", "audit.confidence", "confidence of the lower bounds (default 0.95)"),
    ("--accountant", "NAME", "audit.accountant", "rdp (default) or prv"),
)


def _add_flags(p: argparse.ArgumentParser, flags: tuple[tuple[str, str, str, str], ...]) -> None:
    add_config_arguments(p, _COMMON + flags, "experiment config file")
    p.add_argument("--workdir", required=True, help="folder for checkpoints, results, JSON and plots")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _overrides(args: argparse.Namespace, flags: tuple[tuple[str, str, str, str], ...]) -> list[str]:
    out = list(args.overrides)
    for flag, _, key, _ in _COMMON + flags:
        value = getattr(args, flag[2:].replace("-", "_"), None)
        if value is not None:
            if key == "audit.noise_levels":
                value = "[" + value + "]"
            out.append(f"{key}={value}")
    return out


def add_disparate_impact_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``disparate-impact`` to the CLI's subparsers."""
    p = subparsers.add_parser(
        "disparate-impact",
        help="DP-SGD's accuracy cost on an under-represented class vs the rest (Bagdasaryan et al. 2019)",
        description="Cut class C down to a fraction F of its training images, train with and without DP-SGD "
        "(same init, recipe and seeds), and report per-class accuracy, the small class vs the rest, the gap and "
        "the paired accuracy drops with 95% t intervals over seeds, plus (epsilon, delta). Writes "
        "WORKDIR/disparate_impact.json, WORKDIR/per_class_accuracy.png and rows in WORKDIR/results.sqlite; a "
        "rerun skips recorded runs and resumes an interrupted one.",
    )
    _add_flags(p, _IMPACT)
    return p


def add_privacy_audit_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``privacy-audit`` to the CLI's subparsers."""
    p = subparsers.add_parser(
        "privacy-audit",
        help="empirical epsilon lower bound of DP-SGD from canaries (one-run audit, Steinke et al. 2023)",
        description="Insert M canaries, each with probability 1/2, train once per mechanism (DP-SGD at each "
        "noise level, and noise 0 without clipping), score the canaries by loss and turn the membership guesses "
        "into an epsilon lower bound at the given confidence; compare it with the accountant's epsilon. Writes "
        "WORKDIR/privacy_audit.json, WORKDIR/audit_scores.png and rows in WORKDIR/results.sqlite.",
    )
    _add_flags(p, _AUDIT)
    return p


def _print_table(rows: list[tuple[str, str]]) -> None:
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")


def _iv(d: dict[str, Any]) -> str:
    if d["lo"] is None:
        return f"{d['mean']:.4f}"
    return f"{d['mean']:.4f} [{d['lo']:.4f}, {d['hi']:.4f}]"


def run_disparate_impact(args: argparse.Namespace) -> int:
    """Body of ``poisonlab disparate-impact``; returns the exit code."""
    from poisonlab.defenses.dp.impact_experiment import disparate_impact_experiment
    from poisonlab.defenses.dp.study_config import load_impact_config
    from poisonlab.experiments.job import apply_runtime, stop_on_signals

    config = load_impact_config(args.config, _overrides(args, _IMPACT))
    apply_runtime(config.runtime)
    t0 = time.perf_counter()
    with stop_on_signals() as should_stop:
        out = disparate_impact_experiment(config, args.workdir, progress=not args.quiet, should_stop=should_stop)
    p, s, imp = out["privacy"], out["summary"], config.impact
    print(
        f"poisonlab disparate-impact: {config.model.name} on {config.data.name}, class "
        f"{imp.underrepresented_class} kept at {imp.keep_fraction:g} ({p['small_class_train_size']} images)"
    )
    rows = [
        (
            "DP-SGD",
            f"z={p['noise_multiplier']:.4g}, S={p['max_grad_norm']:g}, q={p['sample_rate']:.4g}, "
            f"{p['steps']} steps -> epsilon {p['epsilon']:.3f} at delta {p['delta']:g} ({p['accountant']})",
        ),
    ]
    for arm, v in s["arms"].items():
        rows += [
            (f"{arm}: small class accuracy", _iv(v["acc_small"])),
            (f"{arm}: rest accuracy", _iv(v["acc_rest"])),
            (f"{arm}: gap (rest - small)", _iv(v["gap"])),
        ]
    if "drop" in s:
        d = s["drop"]
        rows += [
            ("drop non-DP -> DP: small", _iv(d["drop_small"])),
            ("drop non-DP -> DP: rest", _iv(d["drop_rest"])),
            ("gap increase (DP - non-DP)", _iv(d["gap_increase"])),
        ]
        ratio = s["effect"]["drop_ratio_small_over_rest"]
        rows.append(("drop ratio small / rest", "-" if ratio is None else f"{ratio:.2f}"))
    rows += [("seeds", ", ".join(str(x) for x in s["seeds"])), ("wall time (s)", f"{time.perf_counter() - t0:.1f}")]
    _print_table(rows)
    print(f"json: {out['json']}\nplot: {out['plot']}")
    return 0


def run_privacy_audit(args: argparse.Namespace) -> int:
    """Body of ``poisonlab privacy-audit``; returns the exit code."""
    from poisonlab.defenses.dp.audit_experiment import privacy_audit_experiment
    from poisonlab.defenses.dp.study_config import load_audit_config
    from poisonlab.experiments.job import apply_runtime, stop_on_signals

    config = load_audit_config(args.config, _overrides(args, _AUDIT))
    apply_runtime(config.runtime)
    t0 = time.perf_counter()
    with stop_on_signals() as should_stop:
        out = privacy_audit_experiment(config, args.workdir, progress=not args.quiet, should_stop=should_stop)
    c, a = out["canaries"], config.audit
    print(
        f"poisonlab privacy-audit: {config.model.name} on {config.data.name}, {c['m']} {c['kind']} canaries "
        f"({c['included']} included), {out['train_size']} training images, {out['steps']} steps, "
        f"confidence {a.confidence:g}, delta {a.delta:g}"
    )
    rows = []
    for r in out["runs"]:
        o = r["one_run"]
        verdict = "below" if r["below_accountant"] else "ABOVE"
        rows.append(
            (
                r["mechanism"],
                f"lower bound {r['epsilon_lb']:.3f} ({o['correct']}/{o['guesses']} correct, k+={o['k_pos']}, "
                f"k-={o['k_neg']}) {verdict} accountant {r['accountant_epsilon']:.3f}; threshold bound "
                f"{r['threshold_bound']['epsilon_lb']:.3f}; test accuracy {r['test_accuracy']:.4f}",
            )
        )
    rows.append(("wall time (s)", f"{time.perf_counter() - t0:.1f}"))
    _print_table(rows)
    print(f"json: {out['json']}\nplot: {out['plot']}")
    return 0
