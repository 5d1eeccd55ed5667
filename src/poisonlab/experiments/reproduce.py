"""``poisonlab reproduce PAPER``: run one seed paper's small-scale reproduction and set claim beside result.

Each :class:`Reproduction` is the paper's claim (ALGORITHMS.md), the scale we run it at, a poisonlab command
line (the same commands a user runs; recipes in ``recipes/``), where its JSON result puts the measured
numbers, and the test that decides whether the paper's *effect* reproduced at that scale. Reruns resume:
every command underneath is resumable and skips finished work.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from poisonlab.errors import ConfigError, PoisonlabError
from poisonlab.io.atomic import write_bytes_atomic

Measured = dict[str, float]


@dataclass(frozen=True)
class Reproduction:
    """One paper's reproduction.

    Args:
        name: the id on the command line.
        paper: short citation.
        claim: the paper's headline effect (as in ALGORITHMS.md; [paper~] numbers are approximate).
        scale: what we run instead (dataset, model, trials).
        argv: the poisonlab command, with ``{workdir}`` standing for the reproduction's folder.
        result: the JSON file the command writes, relative to ``{workdir}``.
        metrics: measured name -> dotted path in that JSON.
        verdict: measured -> (reproduced?, one line saying why).
    """

    name: str
    paper: str
    claim: str
    scale: str
    argv: tuple[str, ...]
    result: str
    metrics: dict[str, str]
    verdict: Callable[[Measured], tuple[bool, str]]
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def dig(data: Any, path: str) -> Any:
    """``dig({"a": {"b": [1, 2]}}, "a.b.1") == 2``; a key may itself hold dots (``"tpr.0.01"`` finds
    ``{"tpr": {"0.01": x}}``: the longest matching key wins). KeyError naming the path when it is absent."""
    parts = path.split(".")
    cur, i = data, 0
    while i < len(parts):
        if isinstance(cur, list):
            cur, i = cur[int(parts[i])], i + 1
            continue
        for j in range(len(parts), i, -1):
            key = ".".join(parts[i:j])
            if isinstance(cur, dict) and key in cur:
                cur, i = cur[key], j
                break
        else:
            raise KeyError(path)
    return cur


def _at_least(metric: str, bar: float, what: str) -> Callable[[Measured], tuple[bool, str]]:
    def check(m: Measured) -> tuple[bool, str]:
        ok = m[metric] >= bar
        return ok, f"{what} {m[metric]:.3g} {'>=' if ok else '<'} {bar:g}"

    return check


def _all(*checks: Callable[[Measured], tuple[bool, str]]) -> Callable[[Measured], tuple[bool, str]]:
    def check(m: Measured) -> tuple[bool, str]:
        results = [c(m) for c in checks]
        return all(ok for ok, _ in results), "; ".join(text for _, text in results)

    return check


def _at_most(metric: str, bar: float, what: str) -> Callable[[Measured], tuple[bool, str]]:
    def check(m: Measured) -> tuple[bool, str]:
        ok = m[metric] <= bar
        return ok, f"{what} {m[metric]:.3g} {'<=' if ok else '>'} {bar:g}"

    return check


def _ratio_at_least(num: str, den: str, bar: float, what: str) -> Callable[[Measured], tuple[bool, str]]:
    def check(m: Measured) -> tuple[bool, str]:
        ratio = m[num] / m[den] if m[den] > 0 else float("inf")
        ok = ratio >= bar
        return ok, f"{what} {ratio:.3g}x {'>=' if ok else '<'} {bar:g}x"

    return check


REPRODUCTIONS: dict[str, Reproduction] = {}


def register(r: Reproduction) -> Reproduction:
    if r.name in REPRODUCTIONS:
        raise ValueError(f"reproduction {r.name!r} registered twice")
    REPRODUCTIONS[r.name] = r
    return r


def load_reproductions() -> None:
    from poisonlab.experiments import reproductions  # noqa: F401  (registers the entries)


def run_reproduction(name: str, workdir: str | Path, run: bool = True) -> dict[str, Any]:
    """Run (or resume, or with ``run=False`` only read) one reproduction; returns claim, measured, verdict."""
    load_reproductions()
    if name not in REPRODUCTIONS:
        raise ConfigError(f"reproduce: unknown paper {name!r}; expected one of {sorted(REPRODUCTIONS)}")
    r = REPRODUCTIONS[name]
    folder = Path(workdir) / r.name
    argv = [a.replace("{workdir}", str(folder)) for a in r.argv]
    if run:
        from poisonlab.cli import main

        code = main(argv)
        if code != 0:
            raise PoisonlabError(f"reproduce {name}: 'poisonlab {' '.join(argv)}' exited with {code}")
    path = folder / r.result
    if not path.is_file():
        raise PoisonlabError(f"reproduce {name}: {path} not found (run without --report-only first)")
    data = json.loads(path.read_text())
    measured: Measured = {}
    for key, where in r.metrics.items():
        try:
            measured[key] = float(dig(data, where))
        except (KeyError, IndexError, TypeError, ValueError):
            raise PoisonlabError(f"reproduce {name}: {path} has no number at {where!r}") from None
    ok, why = r.verdict(measured)
    return {
        "name": r.name,
        "paper": r.paper,
        "claim": r.claim,
        "scale": r.scale,
        "command": "poisonlab " + " ".join(argv),
        "measured": measured,
        "reproduced": ok,
        "why": why,
        "notes": r.notes,
    }


def markdown_table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| paper | claim | measured here | scale | reproduced |",
        "|---|---|---|---|---|",
    ]
    for res in results:
        lines.append(
            f"| {res['paper']} | {res['claim']} | {res['why']} | {res['scale']} | "
            f"{'yes' if res['reproduced'] else 'no'} |"
        )
    return "\n".join(lines) + "\n"


def reproduce_all(workdir: str | Path, names: list[str] | None = None, run: bool = True) -> list[dict[str, Any]]:
    """Every reproduction (or ``names``), in order; writes ``WORKDIR/reproduction.{md,json}``."""
    load_reproductions()
    results = []
    for name in names or list(REPRODUCTIONS):
        results.append(run_reproduction(name, workdir, run))
        write_bytes_atomic(Path(workdir) / "reproduction.json", json.dumps(results, indent=1).encode())
        write_bytes_atomic(Path(workdir) / "reproduction.md", markdown_table(results).encode())
    return results


def add_reproduce_parser(sub: Any) -> None:
    p = sub.add_parser(
        "reproduce",
        help="run a seed paper's small-scale reproduction; print its claim beside our measured result",
        description="Runs the paper's recipe with the usual poisonlab commands (resumable) in WORKDIR/<paper>/ "
        "and prints the claim, the measured numbers and whether the effect reproduced at this scale. "
        "--all runs every paper and writes WORKDIR/reproduction.md (the README's table).",
    )
    p.add_argument("paper", nargs="?", help="the paper's id (see --list)")
    p.add_argument("--all", action="store_true", help="every paper, in order")
    p.add_argument("--list", action="store_true", help="list the papers and their commands")
    p.add_argument("--workdir", default="runs/reproduce", help="folder for the runs (default runs/reproduce)")
    p.add_argument("--report-only", action="store_true", help="do not run: read finished results")


def run_reproduce(args: Any) -> int:
    load_reproductions()
    if args.list:
        for r in REPRODUCTIONS.values():
            print(f"{r.name:<18} {r.paper}\n{'':<18} poisonlab {' '.join(r.argv)}")
        return 0
    if args.all == bool(args.paper):
        raise ConfigError("reproduce: give a paper id or --all (see --list)")
    names = None if args.all else [args.paper]
    results = reproduce_all(args.workdir, names, run=not args.report_only)
    for res in results:
        print(f"{res['paper']}\n  claim:    {res['claim']}\n  scale:    {res['scale']}")
        shown = ", ".join(f"{k} {v:.4g}" for k, v in res["measured"].items())
        print(
            f"  measured: {shown}\n  verdict:  {'reproduced' if res['reproduced'] else 'NOT reproduced'} ({res['why']})"
        )
    print(f"table: {Path(args.workdir) / 'reproduction.md'}")
    return 0
