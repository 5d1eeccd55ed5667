"""Secure-release curves: victims' clean test accuracy over eps (whole training set protected) and over the
fraction protected, against same-budget noise and the clean data; writes JSON and two PNG plots.

Each point is ``protect_experiment`` in its own workdir (``--workdir``/eps-<levels> or frac-<f>) followed by
``evaluate_protection_experiment``; both resume, so an interrupted run loses at most one victim. The clean arm
is trained once (its seeds are the same in every workdir) and every point's drop is paired with it by seed.

    python benchmarks/protect_curves.py --eps 16 32 64 128 --fractions 0.25 0.5 0.75 --fraction-eps 64 \\
        --victims 2 --models mlp convnet:8 lenet --set model.name=lenet --set protect.steps=60
    python benchmarks/protect_curves.py --models lenet resnet18:8 mlp --set protect.method=adversarial-targeted \\
        --set protect.surrogates=convnet:8,mlp ...   # adversarial poisons (RESULTS.md has the full command)
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch

from poisonlab.attacks.poisoning.protect_config import load_protection_config
from poisonlab.attacks.poisoning.protect_experiment import evaluate_protection_experiment, protect_experiment
from poisonlab.attacks.poisoning.protect_report import accuracy_curve_png
from poisonlab.attacks.poisoning.protection_eval import ProtectionVictim, VictimSpec, summarize_protection

from common import OUT, environment, write_json

FIGURES = Path(__file__).resolve().parent / "figures"


def point(overrides: list[str], workdir: Path, models: list[VictimSpec], k: int, arms: list[str]) -> dict[str, Any]:
    config = load_protection_config(overrides=overrides)
    t0 = time.perf_counter()
    row = protect_experiment(config, workdir)
    craft_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = evaluate_protection_experiment(workdir, k, models, arms)
    print(f"{workdir.name}: crafting loss {row['metrics']['mean_batch_loss']:.3f}, craft {craft_s:.0f}s, "
          f"victims {time.perf_counter() - t0:.0f}s", flush=True)  # fmt: skip
    return {"metrics": row["metrics"], "results": out["results"], "craft_seconds": craft_s}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--eps", type=int, nargs="*", default=[16, 32, 64, 128], help="eps levels (/255), fraction 1")
    ap.add_argument("--fractions", type=float, nargs="*", default=[0.25, 0.5, 0.75])
    ap.add_argument("--fraction-eps", type=int, default=64, help="eps (/255) of the fraction curve")
    ap.add_argument("--victims", type=int, default=2)
    ap.add_argument("--models", nargs="+", default=["mlp", "convnet:8", "lenet"])
    ap.add_argument("--more-models", nargs="*", default=[], help="extra victims trained only at --more-at")
    ap.add_argument("--more-at", type=int, nargs="*", default=[], help="eps levels (/255) that get --more-models")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--workdir", default="runs/protect-curves")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--name", default="protect_curves")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    root, models = Path(args.workdir), [VictimSpec.parse(m) for m in args.models]
    more = [VictimSpec.parse(m) for m in args.more_models]
    base = ["data.name=mnist5k", *args.overrides]
    points: dict[str, Any] = {}
    first = True
    for eps in args.eps:
        arms = ["protected", "noise"] + (["clean"] if first else [])
        own = models + (more if eps in args.more_at else [])
        points[f"eps-{eps}"] = point([*base, f"protect.eps={eps}/255"], root / f"eps-{eps}", own, args.victims, arms)
        first = False
    for frac in args.fractions:
        over = [*base, f"protect.eps={args.fraction_eps}/255", f"protect.fraction={frac}"]
        points[f"frac-{frac:g}"] = point(over, root / f"frac-{frac:g}", models, args.victims, ["protected"])
    clean = [ProtectionVictim(**r) for p in points.values() for r in p["results"] if r["arm"] == "clean"]
    summaries = {}
    for key, p in points.items():
        own = [ProtectionVictim(**r) for r in p["results"] if r["arm"] != "clean"]
        summaries[key] = summarize_protection(own + clean)
    payload = {
        "benchmark": "protect_curves",
        "environment": environment("cpu"),
        "overrides": base,
        "victims": args.victims,
        "models": [m.label for m in models],
        "more_models": {"models": [m.label for m in more], "at_eps": args.more_at},
        "points": {k: {**points[k], "summary": summaries[k]} for k in points},
    }
    path = write_json(args.name, payload)
    FIGURES.mkdir(exist_ok=True)
    labels = [m.label for m in models]
    if args.eps:
        xs = sorted(args.eps)
        curves = {f"{m} protected": [summaries[f"eps-{e}"][m]["protected"] for e in xs] for m in labels}
        curves |= {f"{m} noise": [summaries[f"eps-{e}"][m]["noise"] for e in xs] for m in labels}
        curves |= {f"{m} clean": [summaries[f"eps-{args.eps[0]}"][m]["clean"]] * len(xs) for m in labels}
        png = accuracy_curve_png(xs, curves, "eps (/255), whole training set protected",
                                 "mnist5k: victims trained on the protected release", bar=0.40)  # fmt: skip
        for folder in (OUT, FIGURES):
            (folder / f"{args.name}_eps.png").write_bytes(png)
    if args.fractions and args.eps:
        full = f"eps-{args.fraction_eps}" if args.fraction_eps in args.eps else None
        xs = [0.0, *sorted(args.fractions)] + ([1.0] if full else [])
        keys = [f"frac-{f:g}" for f in sorted(args.fractions)] + ([full] if full else [])
        clean_of = summaries[f"eps-{args.eps[0]}"]
        curves = {f"{m} protected": [clean_of[m]["clean"]] + [summaries[k][m]["protected"] for k in keys]
                  for m in labels}  # fmt: skip
        png = accuracy_curve_png(xs, curves, f"fraction of the training set protected (eps {args.fraction_eps}/255)",
                                 "mnist5k: accuracy over the fraction protected")  # fmt: skip
        for folder in (OUT, FIGURES):
            (folder / f"{args.name}_fraction.png").write_bytes(png)
    print(f"wrote {path}")
    for key, s in summaries.items():
        for m, e in s.items():
            shown = ", ".join(f"{a} {v['mean']:.3f} [{v['lo']:.3f}, {v['hi']:.3f}]" for a, v in e.items())
            print(f"{key} {m}: {shown}")


if __name__ == "__main__":
    main()
