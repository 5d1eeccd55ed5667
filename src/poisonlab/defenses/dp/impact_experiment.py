"""The disparate-impact experiment: ``disparate_impact_experiment(config, workdir)``.

For each seed s in seed .. seed + seeds - 1: build the unbalanced training set (its own "underrepresent"
generator, the same for both arms), train the non-private arm and the DP-SGD arm from the same initialisation
with the same recipe, measure per-class test accuracy and, for the DP arm, per-class clipping statistics. Every
(seed, arm) is a row in the result store (kind ``disparate-impact``) carrying the DP run's (epsilon, delta); a
rerun skips recorded rows and resumes an interrupted training from its checkpoint. Writes
``disparate_impact.json`` and ``per_class_accuracy.png`` into the workdir.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from poisonlab.data.registry import load_dataset
from poisonlab.defenses.dp.accounting import sample_rate_for
from poisonlab.defenses.dp.disparate_impact import (
    ClipStatistics,
    group_accuracy,
    per_class_accuracy,
    summarize_impact,
    underrepresent,
)
from poisonlab.defenses.dp.dp_sgd import DPSGD
from poisonlab.defenses.dp.private_run import planned_epsilon, planned_steps, resolve_noise, train_model
from poisonlab.defenses.dp.study_config import DisparateImpactConfig
from poisonlab.defenses.dp.study_plots import per_class_accuracy_png
from poisonlab.experiments.job import environment, resolve_device
from poisonlab.experiments.store import ResultStore
from poisonlab.io.atomic import write_bytes_atomic
from poisonlab.rng import SeedTree

KIND = "disparate-impact"
STORE = "results.sqlite"
ARMS = ("non-private", "dp-sgd")


def disparate_impact_experiment(
    config: DisparateImpactConfig,
    workdir: str | Path,
    progress: bool = False,
    should_stop: Callable[[], bool] | None = None,
) -> dict[str, Any]:
    """Run both arms for every seed (skipping recorded ones), summarise, and write the JSON and the plot.

    Returns:
        {"config", "config_hash", "privacy", "rows", "summary", "json", "plot"}.
    """
    workdir = Path(workdir)
    imp = config.impact
    device = resolve_device(config.runtime)
    splits = load_dataset(config.data.name, config.data.root)  # fails before anything is written
    stats = splits.train.channel_stats()  # of the full clean split: public knowledge, not the private set
    probe = underrepresent(splits.train, imp.underrepresented_class, imp.keep_fraction, SeedTree(0).generator("x"))
    n = len(probe)
    dp = imp.dp
    sigma = resolve_noise(dp.noise_multiplier, dp.target_epsilon, config.train, n, dp.delta, dp.accountant)
    privacy = {
        "noise_multiplier": sigma,
        "max_grad_norm": dp.max_grad_norm,
        "delta": dp.delta,
        "sample_rate": sample_rate_for(config.train.batch_size, n),
        "steps": planned_steps(config.train, n),
        "epsilon": planned_epsilon(sigma, config.train, n, dp.delta, dp.accountant),
        "accountant": dp.accountant,
        "train_size": n,
        "small_class_train_size": int((probe.labels == imp.underrepresented_class).sum()),
    }
    chash = config.config_hash()
    store = ResultStore(workdir / STORE)
    write_bytes_atomic(
        workdir / "config.yaml", yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False).encode()
    )
    recorded = {(r["trial_key"]): r for r in store.rows(KIND) if r["config_hash"] == chash}
    rows = []
    for seed in range(config.seed, config.seed + imp.seeds):
        for arm in ARMS:
            key = f"seed={seed}/arm={arm}"
            if key not in recorded:
                metrics, meta = _trial(
                    config, splits, stats, seed, arm, sigma, privacy, device, workdir, progress, should_stop
                )
                store.add(KIND, chash, key, seed, metrics, meta)
                recorded[key] = {"metrics": metrics}
            rows.append({"seed": seed, "arm": arm, **recorded[key]["metrics"]})
    summary = summarize_impact(rows)
    result = {
        "experiment": KIND,
        "config_hash": chash,
        "config": config.model_dump(mode="json"),
        "privacy": privacy,
        "rows": rows,
        "summary": summary,
    }
    out_json = workdir / "disparate_impact.json"
    write_bytes_atomic(out_json, json.dumps(result, indent=1).encode())
    title = (
        f"{config.model.name} on {config.data.name}, class {imp.underrepresented_class} kept at "
        f"{imp.keep_fraction:g}; DP: z={sigma:.3g}, S={dp.max_grad_norm:g}, "
        f"eps={privacy['epsilon']:.2f}, delta={dp.delta:g}"
    )
    png = per_class_accuracy_png(summary, splits.train.classes, imp.underrepresented_class, title)
    plot = workdir / "per_class_accuracy.png"
    write_bytes_atomic(plot, png)
    result.update(json=str(out_json), plot=str(plot))
    return result


def _trial(
    config: DisparateImpactConfig,
    splits: Any,
    stats: tuple[tuple[float, ...], tuple[float, ...]],
    seed: int,
    arm: str,
    sigma: float,
    privacy: dict[str, Any],
    device: Any,
    workdir: Path,
    progress: bool,
    should_stop: Callable[[], bool] | None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    imp, dp_cfg = config.impact, config.impact.dp
    seeds = SeedTree(seed)
    train = underrepresent(
        splits.train, imp.underrepresented_class, imp.keep_fraction, seeds.generator("underrepresent")
    )
    dp, clip = None, None
    extra = []
    if arm == "dp-sgd":
        dp = DPSGD(
            train.num_classes,
            seeds.generator("dp-sgd"),
            noise_multiplier=sigma,
            max_grad_norm=dp_cfg.max_grad_norm,
            delta=dp_cfg.delta,
            accountant=dp_cfg.accountant,
        )
        clip = ClipStatistics(dp, train.num_classes)
        extra = [clip]
    t0 = time.perf_counter()
    ckpt = workdir / "checkpoints" / f"seed{seed}-{arm}-{config.config_hash()}"
    model, history = train_model(config, train, stats, seeds, ckpt, device, dp, extra, progress, should_stop)
    correct, total = per_class_accuracy(model, splits.test.to(device))
    groups = group_accuracy(correct, total, imp.underrepresented_class)
    run_eps = None
    if dp is not None:
        run_eps = dp.epsilon()
        if not math.isclose(run_eps, privacy["epsilon"], rel_tol=1e-9):
            raise RuntimeError(f"dp-sgd: epsilon {run_eps!r} differs from the planned {privacy['epsilon']!r}")
    metrics: dict[str, Any] = {
        **groups,
        "per_class_accuracy": [c / t if t else math.nan for c, t in zip(correct, total)],
        "per_class_correct": correct,
        "per_class_total": total,
        "epsilon": run_eps,  # of this arm: None (infinite) for the non-private arm
        "dp_epsilon": privacy["epsilon"],
        "dp_delta": dp_cfg.delta,
        "noise_multiplier": sigma if dp is not None else 0.0,
        "max_grad_norm": dp_cfg.max_grad_norm if dp is not None else None,
        "train_size": len(train),
        "steps": dp.steps if dp is not None else privacy["steps"],
    }
    if clip is not None:
        metrics["clipping"] = clip.summary()
    meta = {
        "seeds": seeds.record(),
        "history": history,
        "environment": environment(device),
        "train_seconds": sum(h["seconds"] for h in history),
        "wall_seconds": time.perf_counter() - t0,
    }
    return metrics, meta
