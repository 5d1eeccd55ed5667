"""Sweeps: ``--sweep seed=0..9 eps=8/255,16/255`` runs an experiment on every point of a grid.

Each grid point is one :class:`~poisonlab.experiments.runner.Trial` (kind ``sweep-<experiment>``) in the
workdir's result store, run through the chosen executor; a killed sweep resumes and skips finished points,
and two processes on the same store share the work without duplicating a point. Each point keeps its own
folder ``WORKDIR/points/<key>`` (checkpoints, models, reports).
"""

from __future__ import annotations

import hashlib
import itertools
import re
from pathlib import Path
from typing import Any

from poisonlab.errors import ConfigError
from poisonlab.experiments.runner import Executor, Trial, run_trials
from poisonlab.experiments.store import ResultStore

ALIASES = {
    "eps": "poison.eps",
    "budget": "poison.budget",
    "recipe": "poison.recipe",
    "fraction": "backdoor.poison_fraction",
    "epochs": "train.epochs",
    "lr": "train.lr",
    "model": "model.name",
    "dataset": "data.name",
    "width": "model.width",
}
EXPERIMENTS = {  # experiment -> trial body of one grid point
    "train": "poisonlab.experiments.sweep:train_point",
    "backdoor": "poisonlab.experiments.sweep:backdoor_point",
    "mia": "poisonlab.experiments.sweep:mia_point",
    "fl": "poisonlab.experiments.sweep:fl_point",
    "invert": "poisonlab.experiments.sweep:invert_point",
}
LOADERS = {  # experiment -> its config loader, ``(path, overrides) -> config``
    "train": "poisonlab.config:load_config",
    "backdoor": "poisonlab.attacks.backdoor.config:load_backdoor_config",
    "mia": "poisonlab.attacks.inference.mia_config:load_mia_config",
    "fl": "poisonlab.fl.config:load_fl_config",
    "invert": "poisonlab.attacks.federated.inversion.config:load_invert_config",
}
_RANGE = re.compile(r"^(-?\d+)\.\.(-?\d+)$")


def parse_grid(items: list[str]) -> list[dict[str, str]]:
    """``["seed=0..2", "eps=8/255,16/255"]`` -> the cartesian product as ordered override dicts.

    ``a..b`` is an inclusive integer range; commas separate values; keys are dotted config fields or the
    short names in :data:`ALIASES`.
    """
    axes: list[tuple[str, list[str]]] = []
    for item in items:
        key, sep, values = item.partition("=")
        key = key.strip()
        if not sep or not key or not values.strip():
            raise ConfigError(f"--sweep {item!r}: expected key=v1,v2,... or key=a..b")
        key = ALIASES.get(key, key)
        if any(k == key for k, _ in axes):
            raise ConfigError(f"--sweep: {key} is given twice")
        m = _RANGE.match(values.strip())
        if m:
            lo, hi = int(m.group(1)), int(m.group(2))
            if hi < lo:
                raise ConfigError(f"--sweep {item!r}: empty range {lo}..{hi}")
            vals = [str(v) for v in range(lo, hi + 1)]
        else:
            vals = [v.strip() for v in values.split(",") if v.strip()]
        if not vals:
            raise ConfigError(f"--sweep {item!r}: no values")
        axes.append((key, vals))
    return [dict(zip([k for k, _ in axes], combo)) for combo in itertools.product(*[v for _, v in axes])]


def point_key(point: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in point.items())


def _folder_name(key: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9_.=,-]+", "_", key)
    return f"{safe[:80]}-{hashlib.sha256(key.encode()).hexdigest()[:8]}"


def run_sweep(
    experiment: str,
    config_path: str | None,
    overrides: list[str],
    grid: list[str],
    workdir: str | Path,
    executor: Executor = "sequential",
    workers: int | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Run ``experiment`` on every grid point (skipping recorded ones); returns ``{"rows": {key: row}, ...}``."""
    if experiment not in EXPERIMENTS:
        raise ConfigError(f"sweep: experiment {experiment!r} cannot be swept; expected one of {sorted(EXPERIMENTS)}")
    workdir = Path(workdir)
    points = parse_grid(grid)
    base = _load(experiment, config_path, overrides)  # validates the base config before any work
    for p in points:  # and every point, so a typo fails before the first trial
        _load(experiment, config_path, overrides + [f"{k}={v}" for k, v in p.items()])
    chash = base.config_hash()
    trials = [
        Trial(
            f"sweep-{experiment}",
            chash,
            point_key(p),
            0,
            EXPERIMENTS[experiment],
            {
                "config": config_path,
                "overrides": overrides + [f"{k}={v}" for k, v in p.items()],
                "workdir": str(workdir / "points" / _folder_name(point_key(p))),
            },
        )
        for p in points
    ]
    store = ResultStore(workdir / "results.sqlite")
    rows = run_trials(trials, store, executor, workers, progress, log=workdir / "sweep.log")
    return {"experiment": experiment, "config_hash": chash, "points": [point_key(p) for p in points], "rows": rows}


def _load(experiment: str, config_path: str | None, overrides: list[str]) -> Any:
    import importlib

    module, _, name = LOADERS[experiment].partition(":")
    return getattr(importlib.import_module(module), name)(config_path, overrides)


def _numbers(data: Any, prefix: str = "") -> dict[str, float]:
    """Every finite number in a nested dict, flattened to ``a.b.c`` keys (booleans and lists are left out)."""
    import math

    out: dict[str, float] = {}
    if isinstance(data, dict):
        for k, v in data.items():
            out.update(_numbers(v, f"{prefix}{k}."))
    elif isinstance(data, int | float) and not isinstance(data, bool) and math.isfinite(float(data)):
        out[prefix[:-1]] = float(data)
    return out


def train_point(spec: dict[str, Any]) -> dict[str, Any]:
    """Trial body of a ``train`` sweep point."""
    from poisonlab.experiments.train import train_experiment

    config = _load("train", spec["config"], spec["overrides"])
    row = train_experiment(config, spec["workdir"])
    meta = {
        "config_hash": row["config_hash"],
        "seeds": row["seeds"],
        "environment": row["environment"],
        "train_seconds": row["train_seconds"],  # timings are not results: they differ between executors
    }
    return {"metrics": row["metrics"], "meta": meta}


def backdoor_point(spec: dict[str, Any]) -> dict[str, Any]:
    """Trial body of a ``backdoor`` sweep point."""
    from poisonlab.experiments.backdoor import backdoor_experiment

    config = _load("backdoor", spec["config"], spec["overrides"])
    row = backdoor_experiment(config, spec["workdir"])
    s = row["summary"]
    metrics = {
        "backdoor_rate": s["backdoor_pooled"]["rate"],
        "clean_accuracy": s["clean_accuracy"]["mean"],
    }
    if s.get("accuracy_drop") is not None:
        metrics["accuracy_drop"] = s["accuracy_drop"]["mean"]
    return {"metrics": metrics, "meta": {"config_hash": row["config_hash"], "summary": s}}


def mia_point(spec: dict[str, Any]) -> dict[str, Any]:
    """Trial body of a ``mia`` sweep point: AUC and TPR at each FPR per arm, subset and attack; the Truth
    Serum factors and the poisons' accuracy cost."""
    from poisonlab.attacks.inference.mia_experiment import mia_experiment

    config = _load("mia", spec["config"], spec["overrides"])
    row = mia_experiment(config, spec["workdir"])
    metrics: dict[str, float] = {}
    for arm, subsets in row["metrics"].items():
        for subset, attacks in subsets.items():
            for attack, m in attacks.items():
                metrics[f"{arm}.{subset}.{attack}.auc"] = float(m["auc"])
                for fpr, tpr in m["tpr_at_fpr"].items():
                    metrics[f"{arm}.{subset}.{attack}.tpr@{fpr}"] = float(tpr)
    s = row["summary"]
    for attack, amp in s.get("amplification", {}).items():
        for key, r in amp.items():
            metrics[f"amplification.{attack}.{key}"] = float(r["ratio"])
    if "accuracy_cost" in s:
        metrics["accuracy_cost"] = float(s["accuracy_cost"]["mean"])
    metrics["accuracy_clean"] = float(s["accuracy_clean"]["mean"])
    meta = {"config_hash": row["config_hash"], "seeds": row["seeds"], "timings": row["timings"]}
    return {"metrics": metrics, "meta": meta}


def fl_point(spec: dict[str, Any]) -> dict[str, Any]:
    """Trial body of an ``fl`` sweep point: the experiment's summary (accuracies before/after the attack
    round, backdoor accuracy, detection), flattened."""
    from poisonlab.fl.experiment import fl_experiment

    config = _load("fl", spec["config"], spec["overrides"])
    row = fl_experiment(config, spec["workdir"])
    s = row["summary"]
    metrics = _numbers({k: v for k, v in s.items() if k != "attack_info"})
    for flag in ("attacker_accepted", "attacker_flagged", "attacker_clipped"):
        if flag in s:
            metrics[flag] = float(bool(s[flag]))
    return {"metrics": metrics, "meta": {"config_hash": row["config_hash"], "pretrain_hash": row["pretrain_hash"]}}


def invert_point(spec: dict[str, Any]) -> dict[str, Any]:
    """Trial body of an ``invert`` sweep point: PSNR, SSIM, MSE and label recovery over the inverted updates."""
    from poisonlab.attacks.federated.inversion.experiment import invert_experiment

    config = _load("invert", spec["config"], spec["overrides"])
    row = invert_experiment(config, spec["workdir"], progress=False)
    metrics = _numbers(row["metrics"])
    return {"metrics": metrics, "meta": {"config_hash": row["config_hash"]}}


def add_sweep_arguments(p: Any) -> None:
    """``--sweep``, ``--executor`` and ``--workers`` for an experiment command's parser."""
    p.add_argument(
        "--sweep",
        nargs="+",
        metavar="KEY=VALUES",
        help="run every point of a grid, e.g. --sweep seed=0..9 train.lr=0.01,0.05 (resumable; one row per point)",
    )
    p.add_argument("--executor", choices=["sequential", "local", "ray"], default="sequential", help="sweep executor")
    p.add_argument("--workers", type=int, help="sweep: parallel points (default: one per core)")


def run_sweep_command(experiment: str, args: Any, overrides: list[str]) -> int:
    """Body of ``poisonlab EXPERIMENT ... --sweep ...``: run the grid and print one line per point."""
    out = run_sweep(
        experiment, args.config, overrides, args.sweep, args.workdir, args.executor, args.workers, not args.quiet
    )
    print(f"poisonlab {experiment} sweep: {len(out['points'])} points, config {out['config_hash']}")
    for key in out["points"]:
        m = out["rows"][key]["metrics"]
        shown = ", ".join(
            f"{k} {v:.4f}" for k, v in list(m.items())[:8] if isinstance(v, float) and k != "train_seconds"
        )
        print(f"  {key}: {shown}")
    print(f"results: {Path(args.workdir) / 'results.sqlite'} (poisonlab results {args.workdir})")
    return 0
