"""The privacy-audit experiment: ``privacy_audit_experiment(config, workdir)``.

One training run per audited mechanism (Steinke, Nasr & Jagielski 2023, black box): the same m canaries and
the same secret coins for every mechanism; DP-SGD at each ``audit.noise_levels`` value, and (``audit.broken``)
the same pipeline with noise 0 and no clipping, which an accountant fed the smallest-epsilon configuration would
still certify. Per mechanism: the one-run epsilon lower bound (rigorous), tf-privacy's Clopper-Pearson threshold
bound on the same scores (heuristic), the accountant's epsilon and whether the lower bound stays below it.
Rows go to the result store (kind ``privacy-audit``; a rerun skips recorded mechanisms and resumes training);
``privacy_audit.json`` and ``audit_scores.png`` go into the workdir.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml

from poisonlab.data.registry import load_dataset
from poisonlab.defenses.dp.audit import one_run_audit, threshold_epsilon_lower_bound
from poisonlab.defenses.dp.canaries import canary_scores, insert_canaries, make_canaries
from poisonlab.defenses.dp.dp_sgd import DPSGD
from poisonlab.defenses.dp.private_run import planned_epsilon, planned_steps, train_model
from poisonlab.defenses.dp.study_config import PrivacyAuditConfig
from poisonlab.defenses.dp.study_plots import audit_scores_png
from poisonlab.errors import ConfigError
from poisonlab.experiments.job import environment, resolve_device
from poisonlab.experiments.store import ResultStore
from poisonlab.io.atomic import write_bytes_atomic
from poisonlab.metrics.membership import auc
from poisonlab.rng import SeedTree
from poisonlab.training.evaluate import evaluate

KIND = "privacy-audit"
STORE = "results.sqlite"


def mechanisms(config: PrivacyAuditConfig) -> list[tuple[str, float, float]]:
    """(name, noise multiplier, clipping norm) of every audited run, in order."""
    a = config.audit
    runs = [(f"dp-sgd z={z:g}", float(z), float(a.max_grad_norm)) for z in a.noise_levels]
    if a.broken:
        runs.append(("broken: z=0, no clipping", 0.0, math.inf))
    return runs


def privacy_audit_experiment(
    config: PrivacyAuditConfig,
    workdir: str | Path,
    progress: bool = False,
    should_stop: Callable[[], bool] | None = None,
) -> dict[str, Any]:
    """Audit every mechanism of :func:`mechanisms`; returns {"runs", "canaries", "json", "plot", ...}."""
    workdir = Path(workdir)
    a = config.audit
    device = resolve_device(config.runtime)
    splits = load_dataset(config.data.name, config.data.root)
    stats = splits.train.channel_stats()  # of the clean split: does not depend on the canary coins
    audit_seeds = SeedTree(config.seed).child("audit")
    base = splits.train
    if a.train_size is not None:
        if a.train_size > len(base):
            raise ConfigError(f"audit.train_size: {a.train_size} > {len(base)} training images")
        pick = torch.randperm(len(base), generator=audit_seeds.generator("train-subset"))[: a.train_size]
        base = base.subset(pick.sort().values)
    canaries = make_canaries(splits.test, a.canaries, a.canary_kind, audit_seeds.generator("canaries"))
    train = insert_canaries(base, canaries).materialize()
    n = len(train)
    claims = {z: planned_epsilon(z, config.train, n, a.delta, a.accountant) for z in a.noise_levels}
    chash = config.config_hash()
    store = ResultStore(workdir / STORE)
    write_bytes_atomic(
        workdir / "config.yaml", yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False).encode()
    )
    recorded = {r["trial_key"]: r["metrics"] for r in store.rows(KIND) if r["config_hash"] == chash}
    runs = []
    for name, z, c in mechanisms(config):
        key = f"mechanism={name}"
        if key not in recorded:
            claimed = claims[z] if z > 0 else min(claims.values())
            metrics, meta = _audit_run(
                config, train, splits.test, stats, canaries, z, c, claimed, device, workdir, progress, should_stop
            )
            metrics["mechanism"] = name
            store.add(KIND, chash, key, config.seed, metrics, meta)
            recorded[key] = metrics
        runs.append(recorded[key])
    result = {
        "experiment": KIND,
        "config_hash": chash,
        "config": config.model_dump(mode="json"),
        "train_size": n,
        "steps": planned_steps(config.train, n),
        "canaries": {"m": len(canaries), "included": int(canaries.included.sum()), "kind": a.canary_kind},
        "runs": runs,
    }
    out_json = workdir / "privacy_audit.json"
    write_bytes_atomic(out_json, json.dumps(result, indent=1).encode())
    plot_runs = [
        {**r, "claim": f"eps {r['accountant_epsilon']:.2f}", "included": canaries.included.tolist()} for r in runs
    ]
    plot = workdir / "audit_scores.png"
    write_bytes_atomic(plot, audit_scores_png(plot_runs))
    result.update(json=str(out_json), plot=str(plot))
    return result


def _audit_run(
    config: PrivacyAuditConfig,
    train: Any,
    test: Any,
    stats: tuple[tuple[float, ...], tuple[float, ...]],
    canaries: Any,
    z: float,
    clip: float,
    claimed: float,
    device: torch.device,
    workdir: Path,
    progress: bool,
    should_stop: Callable[[], bool] | None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    a = config.audit
    seeds = SeedTree(config.seed)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="dp-sgd: noise_multiplier=0")
        dp = DPSGD(train.num_classes, seeds.generator("dp-sgd"), z, clip, delta=a.delta, accountant=a.accountant)
    t0 = time.perf_counter()
    tag = f"z{z:g}" if z > 0 else "broken"
    ckpt = workdir / "checkpoints" / f"{tag}-{config.config_hash()}"
    model, history = train_model(config, train, stats, seeds, ckpt, device, dp, (), progress, should_stop)
    scores = canary_scores(model, canaries)
    inc = canaries.included
    beta = round(1 - a.confidence, 12)
    one_run = one_run_audit(scores.numpy(), inc.numpy(), a.delta, beta)
    heuristic = threshold_epsilon_lower_bound(scores[inc].numpy(), scores[~inc].numpy(), beta, a.delta)
    run_eps = dp.epsilon() if z > 0 else math.inf
    metrics: dict[str, Any] = {
        "noise_multiplier": z,
        "max_grad_norm": None if math.isinf(clip) else clip,
        "delta": a.delta,
        "accountant_epsilon": claimed,  # for the broken run: what the accountant certified for its claim
        "run_epsilon": None if math.isinf(run_eps) else run_eps,
        "epsilon_lb": one_run.epsilon_lb,
        "one_run": one_run.as_dict(),
        "threshold_bound": heuristic,
        "canary_auc": auc(scores.numpy(), inc.numpy()),
        "below_accountant": one_run.epsilon_lb <= claimed,
        "test_accuracy": evaluate(model, test.to(device))["accuracy"],
        "steps": dp.steps,
        "scores": [round(float(s), 6) for s in scores],
    }
    meta = {
        "seeds": seeds.record(),
        "history": history,
        "environment": environment(device),
        "wall_seconds": time.perf_counter() - t0,
    }
    return metrics, meta
