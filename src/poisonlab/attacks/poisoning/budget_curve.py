"""Attack strength against the budget: the trial rows of several ``poisonlab trials`` runs pooled per eps (the
l-inf radius) or per poison budget (how many training images are perturbed).

A budget curve answers "how much perturbation does this attack need?" (``over="eps"``) or "how many poisons?"
(``over="budget"``). For each point it shows:

- the pooled success (Wilson 95%) of the poisoned arm and of the random-noise control;
- the clean-accuracy drop against the noise control (t 95% over trials);
- the target's margin shift past noise (paired t 95% over trials), which still measures the attack where too few
  targets flip for the success rate to tell poisons from noise.

Runs are grouped by their config with the curve's axis (eps, or the budget and poison count), the root seed and the
runtime left out. So runs that split one protocol over several seeds (``--set seed=K``, trial t uses seed K+t) pool
into one point, and a trial seen twice counts once. Runs of other recipes, scenarios, settings, victim recipes or
(on an eps curve) other budgets stay separate curves.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from poisonlab.attacks.poisoning.config import PoisoningExperimentConfig
from poisonlab.attacks.poisoning.trials import ARMS, summarize_trials
from poisonlab.errors import PoisonlabError
from poisonlab.io.atomic import write_bytes_atomic
from poisonlab.metrics.intervals import interval_text
from poisonlab.report.html import image, page, table
from poisonlab.report.plots import budget_curve_png

RESULT = "result.json"
AXES = ("eps", "budget")
"""What a curve can run over: the l-inf radius or the poison budget."""
_ROW_KEYS = ("seed", "poisoned_successes", "poisoned_n", "poisoned_accuracy")


def load_results(paths: Iterable[str | Path]) -> list[dict[str, Any]]:
    """The trials results in ``paths``: each a ``poisonlab trials`` workdir (every ``report*/result.json`` in it)
    or one result.json. A missing, unreadable or foreign file is a PoisonlabError naming it."""
    results = []
    for path in map(Path, paths):
        if path.is_file():
            files = [path]
        elif path.is_dir():
            files = sorted(path.glob(f"report*/{RESULT}"))
        else:
            raise PoisonlabError(f"{path}: no such file or trials workdir")
        if not files:
            raise PoisonlabError(f"{path}: no report*/{RESULT} (expected the workdir of a `poisonlab trials` run)")
        results.extend(_read_result(f) for f in files)
    return results


def _read_result(path: Path) -> dict[str, Any]:
    try:
        result = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise PoisonlabError(f"{path}: unreadable trials result ({type(err).__name__})") from None
    try:
        eps = float(result["config"]["poison"]["eps"])
        rows = result["trials"]
        if not isinstance(rows, list) or not all(isinstance(r, dict) and set(_ROW_KEYS) <= r.keys() for r in rows):
            raise TypeError
    except (KeyError, TypeError, ValueError):
        raise PoisonlabError(
            f"{path}: not a trials result (expected config.poison.eps and trial rows with {', '.join(_ROW_KEYS)})"
        ) from None
    if not 0 < eps <= 1:
        raise PoisonlabError(f"{path}: config.poison.eps = {eps}, expected a radius in (0, 1]")
    return result


def axis_point(result: dict[str, Any], over: str) -> tuple[float, str]:
    """A run's position on the axis ``over`` and how it is written: eps in /255 (``128/255``), or the budget in
    percent of the training set (``2%``), or the exact poison count where the run fixed one (``80 poisons``)."""
    poison = result["config"]["poison"]
    if over == "eps":
        eps255 = round(float(poison["eps"]) * 255, 6)
        return eps255, f"{eps255:g}/255"
    if over != "budget":
        raise ValueError(f"over = {over!r}, expected one of {', '.join(AXES)}")
    if poison.get("poison_count"):
        return float(poison["poison_count"]), f"{int(poison['poison_count'])} poisons"
    percent = round(float(poison["budget"]) * 100, 6)
    return percent, f"{percent:g}%"


def curve_key(result: dict[str, Any], over: str = "eps") -> str:
    """What a run's rows pool with: its config without the axis ``over``, the root seed and the runtime, plus its
    victims' overrides and the arms it ran (a run without the noise control or the clean arm is a curve of its
    own). On a budget curve, runs with a fixed poison count and runs with a budget fraction stay apart."""
    config = {k: v for k, v in _with_defaults(result["config"]).items() if k not in ("seed", "runtime")}
    axis_fields = ("eps",) if over == "eps" else ("budget", "poison_count")
    config["poison"] = {k: v for k, v in config["poison"].items() if k not in axis_fields}
    if over == "budget":
        config["poison"]["budget_unit"] = "count" if result["config"]["poison"].get("poison_count") else "fraction"
    arms = sorted({a for r in result["trials"] for a in ARMS if f"{a}_n" in r})
    blob = json.dumps([config, list(result.get("victim_overrides", [])), arms], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _with_defaults(config: dict[str, Any]) -> dict[str, Any]:
    """The config as this version dumps it: fields added since the run was recorded take their defaults (which
    reproduce the old behaviour), so older runs pool with newer ones. A config this version cannot read is kept
    as recorded."""
    try:
        return PoisoningExperimentConfig.model_validate(config).model_dump(mode="json")
    except ValidationError:
        return config


def budget_curves(results: Sequence[dict[str, Any]], over: str = "eps") -> list[dict[str, Any]]:
    """One curve per config group, one point per value of ``over`` (ascending): the pooled trials'
    ``summarize_trials``. Each point carries ``x`` (eps in /255 or the budget), ``x_text`` and the trial seeds."""
    if over not in AXES:
        raise ValueError(f"over = {over!r}, expected one of {', '.join(AXES)}")
    groups: dict[str, dict[str, Any]] = {}
    for result in results:
        key = curve_key(result, over)
        group = groups.setdefault(key, {"result": result, "points": {}})
        x, x_text = axis_point(result, over)
        point = group["points"].setdefault(x, {"x_text": x_text, "by_seed": {}})
        for row in result["trials"]:
            point["by_seed"].setdefault(int(row["seed"]), row)  # the same trial from two runs counts once
    curves = []
    fixed = "budget" if over == "eps" else "eps"
    for key, group in groups.items():
        first = group["result"]
        poison = first["config"]["poison"]
        points = []
        for x, point in sorted(group["points"].items()):
            by_seed = point["by_seed"]
            rows = [by_seed[s] for s in sorted(by_seed)]
            points.append(
                {
                    "x": x,
                    "x_text": point["x_text"],
                    "seeds": sorted(by_seed),
                    "summary": summarize_trials(rows),
                    "trials": rows,
                }
            )
        curves.append(
            {
                "key": key,
                "over": over,
                "label": _label(poison, first.get("victim_overrides", []), f"{fixed} {axis_point(first, fixed)[1]}"),
                "recipe": poison["recipe"],
                "scenario": poison["scenario"],
                "victim_overrides": list(first.get("victim_overrides", [])),
                "points": points,
            }
        )
    labels = [c["label"] for c in curves]
    for c in curves:  # same recipe and scenario with other settings: tell them apart by key
        if labels.count(c["label"]) > 1:
            c["label"] += f" [{c['key'][:6]}]"
    return curves


def _label(poison: dict[str, Any], victim_overrides: Sequence[str], fixed: str) -> str:
    label = f"{poison['recipe']} ({poison['scenario']}), {fixed}"
    return label + (f", victims {' '.join(victim_overrides)}" if victim_overrides else "")


CURVE_HEADER = (
    "curve", "point", "trials x victims", "poisoned success [Wilson 95%]", "trials with a hit",
    "noise control", "drop vs noise, points [t 95%]", "margin shift past noise, logits [paired t 95%]",
)  # fmt: skip


def curve_rows(curves: Sequence[dict[str, Any]]) -> list[list[str]]:
    """One table row per (curve, point), columns as ``CURVE_HEADER`` (the point is the eps or the budget)."""
    out = []
    for c in curves:
        for p in c["points"]:
            s = p["summary"]
            pois, ctrl = s["poisoned"], s.get("control")
            drop, shift = s.get("accuracy_drop_vs_control"), s.get("margin_shift_vs_control")
            victims = pois["success"]["n"] // max(s["trials"], 1)
            out.append(
                [
                    c["label"],
                    p["x_text"],
                    f"{s['trials']} x {victims}",
                    proportion_text(pois["success"]),
                    f"{pois['trials_with_success']}/{s['trials']}",
                    proportion_text(ctrl["success"]) if ctrl else "-",
                    interval_text(drop, scale=100, digits=2),
                    interval_text(shift, scale=1, digits=1),
                ]
            )
    return out


def per_trial_rows(curve: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """A curve's trials across budgets: one row per trial seed (target -> adversarial class), one column per point
    with the poisoned victims' hits and the target's margin shift past noise (or "." where not run)."""
    header = ["seed", "target -> adv class", *(f"{p['x_text']}: hits, shift" for p in curve["points"])]
    cells: dict[int, list[str]] = {}
    names: dict[int, str] = {}
    for i, p in enumerate(curve["points"]):
        for r in p["trials"]:
            seed = int(r["seed"])
            names.setdefault(seed, f"{r.get('target_ids', '?')} -> {r.get('adv_class', '?')}")
            shift = (
                r["poisoned_margin"] - r["control_margin"] if "control_margin" in r and "poisoned_margin" in r else None
            )
            cell = f"{r['poisoned_successes']}/{r['poisoned_n']}" + ("" if shift is None else f", {shift:+.1f}")
            cells.setdefault(seed, ["."] * len(curve["points"]))[i] = cell
    return header, [[str(s), names[s], *cells[s]] for s in sorted(cells)]


def proportion_text(p: dict[str, Any]) -> str:
    """A pooled success as ``rate% [lo, hi] (k/n)``."""
    return f"{100 * p['rate']:.0f}% [{100 * p['lo']:.0f}, {100 * p['hi']:.0f}] ({p['successes']}/{p['n']})"


def markdown(curves: Sequence[dict[str, Any]], per_trial: bool = False) -> str:
    """The curves as a Markdown table (for RESULTS and READMEs), with each curve's per-trial table if asked."""
    parts = [_markdown_table(CURVE_HEADER, curve_rows(curves))]
    if per_trial:
        parts += [f"{c['label']}, per trial:\n\n" + _markdown_table(*per_trial_rows(c)) for c in curves]
    return "\n\n".join(parts)


def _markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def write_curve_report(curves: Sequence[dict[str, Any]], directory: str | Path) -> Path:
    """``curve.json``, ``curve.png`` and an ``index.html`` with the table and the picture; returns the HTML path."""
    directory = Path(directory)
    over = curves[0]["over"] if curves else "eps"
    xlabel = "eps (/255)" if over == "eps" else "poison budget (% of the training set, or poisons)"
    png = budget_curve_png(
        [
            (
                c["label"],
                [p["x"] for p in c["points"]],
                [_interval(p["summary"]["poisoned"]["success"], "rate") for p in c["points"]],
                [_interval(p["summary"].get("control", {}).get("success"), "rate") for p in c["points"]],
                [_interval(p["summary"].get("margin_shift_vs_control"), "mean") for p in c["points"]],
            )
            for c in curves
        ],
        xlabel=xlabel,
    )
    seeds = [[c["label"], p["x_text"], p["seeds"]] for c in curves for p in c["points"]]
    body = page(
        f"poisonlab: attack strength against the {'l-inf radius' if over == 'eps' else 'poison budget'}",
        [
            ("Per point", table(curve_rows(curves), CURVE_HEADER)),
            ("Curves", image(png, f"success and margin shift against {over}")),
            ("Trial seeds pooled per point", table(seeds, ["curve", "point", "trial seeds"])),
            *((f"Per trial: {c['label']}", _per_trial_table(c)) for c in curves),
        ],
    )
    write_bytes_atomic(directory / "curve.json", json.dumps(list(curves), indent=1).encode())
    write_bytes_atomic(directory / "curve.png", png)
    write_bytes_atomic(directory / "index.html", body.encode())
    return directory / "index.html"


def _per_trial_table(curve: dict[str, Any]) -> str:
    header, rows = per_trial_rows(curve)
    return table(rows, header)


def _interval(d: dict[str, Any] | None, centre: str) -> tuple[float, float, float] | None:
    return None if d is None else (float(d[centre]), float(d["lo"]), float(d["hi"]))
