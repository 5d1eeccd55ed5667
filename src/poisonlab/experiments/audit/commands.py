"""``poisonlab audit``: red-team a training recipe with every registered attack and defense."""

from __future__ import annotations

import argparse
import sys


def add_audit_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "audit",
        help="red-team a training recipe: every attack, with and without each defense, into one report",
        description="Train the recipe and run the audit's attacks (targeted poisoning, backdoor, membership "
        "inference, gradient inversion, ... as registered) under each selected defense, as resumable trials in "
        "a result store; write WORKDIR/report/index.html and WORKDIR/report/audit.json. 'quick' finishes in "
        "under 10 minutes on a 2-core CPU.",
    )
    p.add_argument("--recipe", default="default", help="training recipe: 'default', 'paper' or a YAML file")
    p.add_argument("--config", metavar="YAML", help="a full audit config (sections data, model, train, audit)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--dataset", help="shortcut for --set data.name=...")
    p.add_argument("--data-root", help="shortcut for --set data.root=...")
    p.add_argument("--model", help="shortcut for --set model.name=...")
    p.add_argument("--seed", type=int, help="root seed (trial t uses seed + t)")
    p.add_argument("--budget", choices=["quick", "standard", "full"], help="trial counts (default quick)")
    p.add_argument("--attacks", help="comma-separated probes (default: all registered)")
    p.add_argument("--defenses", help="comma-separated defenses (default: the budget's list)")
    p.add_argument("--executor", choices=["sequential", "local", "ray"], help="how trials run (default local)")
    p.add_argument("--workers", type=int, help="parallel trials (default: one per core)")
    p.add_argument(
        "--max-trials",
        type=int,
        metavar="N",
        help="at most N seeds per attack and defense (a later run without it adds the rest to the same store)",
    )
    p.add_argument("--store", help="result store file (default WORKDIR/results.sqlite)")
    p.add_argument("--device", help="auto, cpu or cuda")
    p.add_argument("--workdir", required=True, help="folder for trials, the result store and the report")
    p.add_argument("--quiet", action="store_true", help="no progress output")


def run_audit(args: argparse.Namespace) -> int:
    from poisonlab.experiments.audit.config import load_audit_config
    from poisonlab.experiments.audit.suite import audit_experiment

    overrides = list(args.overrides)
    for flag, key in (
        ("dataset", "data.name"),
        ("data_root", "data.root"),
        ("model", "model.name"),
        ("seed", "seed"),
        ("budget", "audit.budget"),
        ("executor", "audit.executor"),
        ("workers", "audit.workers"),
        ("max_trials", "audit.max_trials"),
        ("store", "audit.store"),
        ("device", "runtime.device"),
    ):
        value = getattr(args, flag)
        if value is not None:
            overrides.append(f"{key}={value}")
    for flag in ("attacks", "defenses"):
        value = getattr(args, flag)
        if value is not None:
            items = [v.strip() for v in value.split(",") if v.strip()]
            overrides.append(f"audit.{flag}=[{','.join(items)}]")
    config = load_audit_config(args.recipe, args.config, overrides)

    def echo(line: str) -> None:
        if not args.quiet:
            print(line, file=sys.stderr, flush=True)

    result = audit_experiment(config, args.workdir, progress=not args.quiet, echo=echo)
    from poisonlab.experiments.audit.report import overview

    header, rows = overview(result)
    print(f"poisonlab audit: {config.model.name} on {config.data.name}, budget {config.audit.budget}")
    plain = [[_strip(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in plain)) for i, h in enumerate(header)]
    print("  " + "  ".join(h.ljust(w) for h, w in zip(header, widths)))
    for r in plain:
        print("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)))
    print(f"report: {result['report']}")
    return 0


def _strip(cell: str) -> str:
    import html
    import re

    return html.unescape(re.sub(r"<[^>]+>", "", cell))
