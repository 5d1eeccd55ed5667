"""CLI command bodies for ``poisonlab diagnose`` and ``poisonlab diagnose-study`` (wired in by cli.py).

poisonlab diagnose --checkpoint WORKDIR [--compare init|C2] [--out DIR]
poisonlab diagnose-study --recipe rank|norm|FILE.yaml --seeds 3 --workdir W
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from poisonlab.errors import ConfigError, PoisonlabError


def add_diagnose_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``diagnose`` to the CLI's subparsers."""
    p = subparsers.add_parser(
        "diagnose",
        help="weight-matrix spectra and ranks, parameter norms, and the loss along the line between two models",
        description="Diagnostics of 'Truth or Backpropaganda?' (arXiv 1910.00359) for a trained model: per-layer "
        "singular values (a convolution as the linear operator on its input), effective and numerical rank, "
        "parameter norms, and with --compare the loss/accuracy on the straight line between the two models. "
        "Writes OUT/index.html (plots) and OUT/result.json.",
    )
    p.add_argument("--checkpoint", required=True, help="a model artifact dir, or a workdir of train/backdoor/study")
    p.add_argument("--compare", help="a second model (same architecture), or 'init' for the first one's initialisation")
    p.add_argument("--out", help="report folder (default: CHECKPOINT/diagnose, or next to an artifact)")
    p.add_argument("--points", type=int, default=11, help="alphas on the line from 0 to 1 (default 11)")
    p.add_argument("--path-size", type=int, default=1000, help="samples of each split evaluated on the line (1000)")
    p.add_argument("--extend", type=float, default=0.0, help="also go this far beyond both ends, e.g. 0.5")
    p.add_argument(
        "--bn", choices=["recompute", "interpolate"], default="recompute", help="BatchNorm statistics on the path"
    )
    p.add_argument(
        "--conv-mode",
        choices=["operator", "reshape"],
        default="operator",
        help="convolution as operator or reshaped kernel",
    )
    p.add_argument("--threads", type=int, help="torch CPU threads")
    return p


def _alphas(points: int, extend: float) -> list[float]:
    if points < 2:
        raise ConfigError(f"--points: expected >= 2, got {points}")
    if not (0 <= extend <= 10 and math.isfinite(extend)):
        raise ConfigError(f"--extend: expected 0..10, got {extend}")
    lo, hi = -extend, 1 + extend
    out = [lo + (hi - lo) * i / (points - 1) for i in range(points)]
    return sorted({round(a, 12) for a in out} | {0.0, 1.0})


def run_diagnose(args: argparse.Namespace) -> int:
    """Body of ``poisonlab diagnose``; returns the exit code."""
    import torch

    from poisonlab.data.registry import load_dataset
    from poisonlab.diagnostics.api import diagnose_with_spectra
    from poisonlab.diagnostics.loading import initialisation_of, load_model
    from poisonlab.diagnostics.report import write_diagnose_report

    if args.threads is not None:
        if args.threads < 1:
            raise ConfigError(f"--threads: expected >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    alphas = _alphas(args.points, args.extend)
    if args.path_size < 2:
        raise ConfigError(f"--path-size: expected >= 2, got {args.path_size}")
    a = load_model(args.checkpoint)
    splits = load_dataset(a.config.data.name, a.config.data.root)
    b = None
    if args.compare == "init":
        b = initialisation_of(a, splits)
    elif args.compare:
        b = load_model(args.compare, splits)
        if b.config.data.name != a.config.data.name:
            raise PoisonlabError(f"--compare: trained on {b.config.data.name}, --checkpoint on {a.config.data.name}")
    result, spectra = diagnose_with_spectra(
        a.model,
        splits,
        b.model if b else None,
        alphas=alphas,
        bn=args.bn,
        conv_mode=args.conv_mode,
        path_size=args.path_size,
    )
    result["models"]["A"]["source"] = a.source
    if b is not None:
        result["models"]["B"]["source"] = b.source
    if args.out:
        out = Path(args.out)
    elif Path(args.checkpoint, "manifest.json").is_file():
        out = Path(args.checkpoint).parent / f"diagnose-{Path(args.checkpoint).name}"
    else:
        out = Path(args.checkpoint) / "diagnose"
    page = write_diagnose_report(out, result, spectra)
    _print(result)
    print(f"report: {page}")
    return 0


def _print(result: dict[str, Any]) -> None:
    for label, m in result["models"].items():
        s = m["summary"]
        print(f"model {label}: {m['source']}")
        print(
            f"  test accuracy {s.get('test_accuracy', math.nan):.4f}, test loss {s.get('test_loss', math.nan):.4f}, "
            f"||theta||_2 {s['total_l2']:.3f}, mean effective rank / max {s['mean_effective_rank_ratio']:.3f}"
        )
        width = max(len(r["name"]) for r in m["layers"])
        for r in m["layers"]:
            print(
                f"  {r['name']:<{width}}  {r['kind']:<6} eff. rank {r['effective_rank']:8.1f} / {r['max_rank']:<6} "
                f"num. rank {r['numerical_rank']:<6} sigma_max {r['spectral_norm']:.3f}"
            )
    it = result.get("interpolation")
    if it:
        print(f"line A -> B ({len(it['alphas'])} points, BatchNorm statistics: {it['bn']}):")
        for name, c in it["splits"].items():
            print(
                f"  {name}: loss {c['loss'][it['alphas'].index(0.0)]:.4f} -> max {max(c['loss']):.4f} -> "
                f"{c['loss'][it['alphas'].index(1.0)]:.4f}, loss barrier {c['loss_barrier']:.4f}, "
                f"error barrier {c['error_barrier']:.4f}"
            )
        print(f"  l2 distance A-B {result['difference']['distance_l2']:.3f}")


def add_diagnose_study_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``diagnose-study`` to the CLI's subparsers."""
    p = subparsers.add_parser(
        "diagnose-study",
        help="rank vs generalisation/robustness, or norm vs generalisation ('Truth or Backpropaganda?' recipes)",
        description="Train every arm of a study recipe on the same seeds (resumable: finished trials are kept in "
        "WORKDIR/results.sqlite), measure test accuracy, robust accuracy (PGD, WITCHcraft), effective rank and "
        "parameter norm, and report mean [95% t interval] over seeds plus paired differences to the first arm.",
    )
    p.add_argument("--recipe", required=True, help="rank, norm, or a YAML file (see recipes/diagnose-*.yaml)")
    p.add_argument("--seeds", type=int, help="seeds per arm (shortcut for --set study.seeds=N)")
    p.add_argument("--workdir", required=True, help="folder for checkpoints, models, results and the report")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--threads", type=int, help="shortcut for --set runtime.threads=N (the recipes use 1)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def run_diagnose_study(args: argparse.Namespace) -> int:
    """Body of ``poisonlab diagnose-study``; returns the exit code."""
    from poisonlab.diagnostics.report import STUDY_COLUMNS, study_table
    from poisonlab.diagnostics.study import run_study
    from poisonlab.diagnostics.study_config import load_study_config
    from poisonlab.experiments.job import apply_runtime, stop_on_signals

    overrides = list(args.overrides)
    if args.seeds is not None:
        overrides.append(f"study.seeds={args.seeds}")
    if args.threads is not None:
        overrides.append(f"runtime.threads={args.threads}")
    config = load_study_config(args.recipe, overrides)
    apply_runtime(config.runtime)
    with stop_on_signals() as should_stop:
        result = run_study(config, args.workdir, not args.quiet, should_stop, log=None if args.quiet else print)
    print(
        f"poisonlab diagnose-study {config.study.kind}: {config.model.name} on {config.data.name}, "
        f"seeds {config.seed}..{config.seed + config.study.seeds - 1}"
    )
    summary = result["summary"]
    print(markdown_table(*study_table(summary, STUDY_COLUMNS)))
    base = summary["baseline"]
    diffs = tuple((f"{k}_minus_{base}", f"{h} - {base}", s) for k, h, s in STUDY_COLUMNS)
    rows, head = study_table(summary, diffs)
    print(f"paired differences to {base} (same seeds):")
    print(markdown_table(rows[1:], head))
    print(f"report: {result['report']}")
    return 0


def markdown_table(rows: list[list[str]], header: list[str]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)
