"""Targeted clean-label poisoning on mnist5k + ConvNet (issue 3): success over independent trials.

For each (recipe, scenario, eps) arm it runs ``poisonlab.attacks.poisoning.trials.run_trials`` on the demo
victim recipe (recipes/mnist5k-convnet.yaml, no augmentation, so crafting runs with ``augment=false`` by
default), budget 1% (40 poisons), and writes benchmarks/out/<name>.json plus a Markdown table with the
pooled success (Wilson 95%) of the poisoned arm and of the random-noise control, the clean-accuracy drop,
the final crafting loss per trial and the wall time per trial. Trials resume (rerun the same command).

    python benchmarks/bench_poisoning.py --eps 128/255 --trials 10 --victims 2 [--recipe gradient-matching]
        [--scenario from-scratch] [--set poison.restarts=8 ...] [--victim-set train.epochs=20 ...]
        [--workdir runs/bench-poisoning]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch

from poisonlab.attacks.poisoning.budget_curve import proportion_text
from poisonlab.attacks.poisoning.config import load_poisoning_config
from poisonlab.attacks.poisoning.trials import run_trials
from poisonlab.metrics.intervals import interval_text

from common import environment, write_json

ROOT = Path(__file__).resolve().parents[1]


def run_arm(recipe: str, scenario: str, eps: str, args: argparse.Namespace) -> dict[str, Any]:
    overrides = [
        f"poison.recipe={recipe}",
        f"poison.scenario={scenario}",
        f"poison.eps={eps}",
        "poison.budget=0.01",
        "poison.augment=false",
        "runtime.device=cpu",
        *args.extra,
    ]
    config = load_poisoning_config(ROOT / "recipes" / "mnist5k-convnet.yaml", overrides)
    name = f"{recipe}-{scenario}-eps{eps.replace('/', 'of')}"
    t0 = time.perf_counter()
    out = run_trials(
        config, Path(args.workdir) / name, args.trials, args.victims, clean=not args.no_clean,
        victim_overrides=args.victim_set,
    )  # fmt: skip
    s = out["summary"]
    return {
        "arm": name,
        "recipe": recipe,
        "scenario": scenario,
        "eps": eps,
        "config_hash": out["config_hash"],
        "poison": config.poison.model_dump(mode="json"),
        "victim_overrides": list(args.victim_set),
        "summary": s,
        "trials": out["trials"],
        "wall_seconds_this_run": time.perf_counter() - t0,
        "report": out["report"],
    }


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| recipe | scenario | eps | trials x victims | poisoned success [Wilson 95%] | trials with a hit "
        "| noise control | clean acc (poisoned / clean) | drop vs clean (or noise) arm, points [t 95%] "
        "| target margin shift past noise, logits [paired t 95%] | final loss, median | s/trial |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        s = r["summary"]
        pois, ctrl = s["poisoned"], s.get("control")
        clean = s.get("clean")
        drop = s.get("accuracy_drop") or s.get("accuracy_drop_vs_control")
        losses = sorted(s.get("craft_loss", []))
        med = losses[len(losses) // 2] if losses else float("nan")
        walls = [t.get("wall_seconds") for t in r["trials"] if t.get("wall_seconds")]
        acc = f"{100 * pois['clean_accuracy']['mean']:.2f}"
        if clean:
            acc += f" / {100 * clean['clean_accuracy']['mean']:.2f}"
        per_trial = f"{sum(walls) / len(walls):.0f}" if walls else "-"
        hits = proportion_text(pois["success"])
        noise = proportion_text(ctrl["success"]) if ctrl else "-"
        dropped = interval_text(drop, scale=100, digits=2)
        shift = interval_text(s.get("margin_shift_vs_control"), scale=1, digits=1)
        victims = pois["success"]["n"] // max(s["trials"], 1)
        lines.append(
            f"| {r['recipe']} | {r['scenario']} | {r['eps']} | {s['trials']} x {victims} | {hits} "
            f"| {pois['trials_with_success']}/{s['trials']} | {noise} | {acc} "
            f"| {dropped} | {shift} | {med:.3f} | {per_trial} |"
        )
    return "\n".join(lines)


def _device(extra: list[str]) -> str:
    """The device the arms ran on: the last ``runtime.device=`` override, else the CPU."""
    chosen = [e.split("=", 1)[1] for e in extra if e.startswith("runtime.device=")]
    return chosen[-1] if chosen else "cpu"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", nargs="*", default=["gradient-matching"])
    ap.add_argument("--scenario", nargs="*", default=["from-scratch"])
    ap.add_argument("--eps", nargs="*", default=["128/255"])
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--victims", type=int, default=2)
    ap.add_argument("--no-clean", action="store_true", help="skip the clean arm (drop then unavailable)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workdir", default=str(ROOT / "runs" / "bench-poisoning"))
    ap.add_argument("--set", dest="extra", action="append", default=[], help="extra config override")
    ap.add_argument(
        "--victim-set", action="append", default=[], help="victims' own train.*/model.* value (surrogates keep theirs)"
    )
    ap.add_argument("--name", default="poisoning", help="output file benchmarks/out/NAME.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for recipe in args.recipe:
        for scenario in args.scenario:
            for eps in args.eps:
                rows.append(run_arm(recipe, scenario, eps, args))
                table = markdown(rows)
                env = environment(_device(args.extra))
                path = write_json(args.name, {"environment": env, "rows": rows, "markdown": table})
                print(table, flush=True)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
