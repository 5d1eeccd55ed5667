"""The two "Truth or Backpropaganda?" experiments at small scale, as one resumable study runner.

Goldblum et al. (arXiv 1910.00359): (1) rank vs generalisation and robustness: train with and without the
rank-lowering projection, compare test accuracy and robust accuracy (PGD, WITCHcraft); (2) norm vs generalisation:
weight decay vs the norm bias towards a high-norm target. Every arm is trained on the same seeds (same
initialisation and batch order), so arms are compared per seed; intervals are Student-t over seeds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from poisonlab.attacks.evasion import PGD, WITCHcraft, robust_accuracy
from poisonlab.budget import LinfBudget
from poisonlab.data.dataset import Splits
from poisonlab.data.registry import load_dataset
from poisonlab.diagnostics.interpolation import spread_subset
from poisonlab.diagnostics.norms import norm_summary
from poisonlab.diagnostics.regularizers import NormBias, NuclearNormPenalty, SpectralProjection
from poisonlab.diagnostics.spectra import layer_spectra
from poisonlab.diagnostics.study_config import ArmConfig, DiagnoseStudyConfig, RobustConfig
from poisonlab.experiments.job import environment, resolve_device, trainer_options
from poisonlab.experiments.store import ResultStore
from poisonlab.experiments.train import build_for
from poisonlab.io.artifact import save_artifact
from poisonlab.io.atomic import write_bytes_atomic
from poisonlab.io.checkpoint import Checkpointer
from poisonlab.metrics.intervals import t_interval
from poisonlab.rng import SeedTree
from poisonlab.training.evaluate import evaluate
from poisonlab.training.hooks import TrainingHook
from poisonlab.training.recipes import milestones
from poisonlab.training.trainer import Trainer

KIND = "diagnose-study"
STORE = "results.sqlite"
#: Metrics summarised per arm (those present in the rows).
METRICS = (
    "test_accuracy",
    "train_accuracy",
    "generalization_gap",
    "test_loss",
    "robust_pgd",
    "robust_witchcraft",
    "mean_effective_rank",
    "mean_effective_rank_ratio",
    "total_l2",
)

#: Metrics in [0, 1] whose intervals are clipped to that range.
PROPORTIONS = frozenset({"test_accuracy", "train_accuracy", "robust_pgd", "robust_witchcraft"})


def arm_hooks(
    arm: ArmConfig, model: nn.Module, config: DiagnoseStudyConfig, shape: tuple[int, ...]
) -> list[TrainingHook]:
    """The Trainer hooks of one arm, built on the freshly initialised ``model``."""
    hooks: list[TrainingHook] = []
    if arm.rank_projection is not None:
        rp = arm.rank_projection
        # default: the learning-rate drops (the reference's rank_sched), except one after the final epoch, which
        # would leave BatchNorm statistics stale (the reference trains 60 epochs past its last projection)
        last = config.train.epochs - 1
        at = rp.at_epochs if rp.at_epochs is not None else [e for e in milestones(config.train.epochs) if e < last]
        hooks.append(SpectralProjection(model, shape, at, rp.threshold, rp.mode, rp.skip_first, rp.include_linear))
    if arm.nuclear_norm is not None:
        hooks.append(NuclearNormPenalty(model, shape, arm.nuclear_norm.weight, arm.nuclear_norm.skip_first))
    if arm.norm_bias is not None:
        nb = arm.norm_bias
        hooks.append(NormBias(model, nb.weight, nb.target_sq_norm, nb.target_ratio))
    return hooks


def robust_metrics(model: nn.Module, splits: Splits, robust: RobustConfig, seeds: SeedTree) -> dict[str, float]:
    """Robust accuracy on ``robust.n`` test images spread over the split, under each configured attack."""
    device = next(model.parameters()).device
    data = spread_subset(splits.test, robust.n).to(device)
    n = len(data)
    budget = LinfBudget(robust.eps)
    out: dict[str, float] = {}
    for name in robust.attacks:
        attack = PGD(budget, robust.steps) if name == "pgd" else WITCHcraft(budget, robust.steps)
        out[f"robust_{name}"] = robust_accuracy(model, data, attack, seeds.generator(f"robust/{name}", device)).rate
    out["robust_clean_accuracy"] = evaluate(model, data)["accuracy"]
    out["robust_n"] = float(n)
    return out


def rank_metrics(model: nn.Module, shape: tuple[int, ...]) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Mean effective rank over all weight layers (absolute, and as a fraction of each layer's largest possible
    rank), and the per-layer summaries."""
    layers = [s.summary() for s in layer_spectra(model, shape)]
    mean = sum(float(r["effective_rank"]) for r in layers) / len(layers)
    ratio = sum(float(r["effective_rank_ratio"]) for r in layers) / len(layers)
    return {"mean_effective_rank": mean, "mean_effective_rank_ratio": ratio}, layers


def run_trial(
    config: DiagnoseStudyConfig,
    arm: ArmConfig,
    seed: int,
    splits: Splits,
    workdir: Path,
    device: torch.device,
    progress: bool = False,
    should_stop: Callable[[], bool] | None = None,
) -> dict[str, Any]:
    """Train one arm with root seed ``seed`` (resuming from its checkpoints) and measure it; returns the row."""
    train_cfg = config.arm_config(arm)
    seeds = SeedTree(seed)
    model = build_for(train_cfg, splits, seeds, device)
    shape = splits.train.shape
    hooks = arm_hooks(arm, model, config, shape)
    thash = config.train_hash(arm)  # evaluation settings do not invalidate trained weights
    name = f"{arm.name}-seed{seed}"
    ckpt = Checkpointer(workdir / "checkpoints" / f"{name}-{thash}", thash, keep=config.runtime.keep_checkpoints)
    trainer = Trainer(
        model,
        splits.train,
        train_cfg.train,
        seeds,
        hooks=hooks,
        checkpointer=ckpt,
        should_stop=should_stop,
        **trainer_options(config.runtime),
        progress=progress,
    )
    history = trainer.fit()
    t0 = time.perf_counter()
    test = evaluate(model, splits.test.to(device))
    train = evaluate(model, splits.train.to(device))
    metrics: dict[str, float] = {
        "test_accuracy": test["accuracy"],
        "test_loss": test["loss"],
        "train_accuracy": train["accuracy"],
        "train_loss": train["loss"],
        "generalization_gap": train["accuracy"] - test["accuracy"],
        "total_l2": norm_summary(model)["total_l2"],
    }
    ranks, layers = rank_metrics(model, shape)
    metrics.update(ranks)
    if config.study.robust is not None:
        metrics.update(robust_metrics(model, splits, config.study.robust, seeds.child("diagnose")))
    metrics["train_seconds"] = sum(h["seconds"] for h in history)
    metrics["eval_seconds"] = time.perf_counter() - t0
    save_artifact(
        workdir / "models" / name,
        "model",
        dict(model.state_dict()),
        {"config": train_cfg.model_dump(mode="json"), "seed": seed, "arm": arm.model_dump(mode="json")},
    )
    meta = {
        "arm": arm.name,
        "layers": layers,
        "history": history,
        "seeds": seeds.record(),
        "environment": environment(device),
        "hooks": [h.state_dict() for h in hooks],
    }
    return {"metrics": metrics, "meta": meta}


def summarize(config: DiagnoseStudyConfig, rows: dict[str, dict[int, dict[str, Any]]]) -> dict[str, Any]:
    """Per arm and metric the t interval over seeds; per non-first arm the paired difference to the first arm."""
    base = config.study.arms[0].name
    out: dict[str, Any] = {"baseline": base, "arms": {}}
    for arm in config.study.arms:
        per_seed = rows.get(arm.name, {})
        entry: dict[str, Any] = {"seeds": sorted(per_seed)}
        for metric in METRICS:
            vals = [per_seed[s]["metrics"][metric] for s in sorted(per_seed) if metric in per_seed[s]["metrics"]]
            if vals:
                mean, lo, hi = t_interval(vals)
                if metric in PROPORTIONS:  # the t interval clipped to the metric's range
                    lo, hi = max(lo, 0.0), min(hi, 1.0)
                entry[metric] = {"mean": mean, "lo": lo, "hi": hi, "values": vals}
            common = sorted(set(per_seed) & set(rows.get(base, {})))
            if arm.name != base and common and metric in per_seed[common[0]]["metrics"]:
                diffs = [per_seed[s]["metrics"][metric] - rows[base][s]["metrics"][metric] for s in common]
                mean, lo, hi = t_interval(diffs)
                entry[f"{metric}_minus_{base}"] = {"mean": mean, "lo": lo, "hi": hi, "values": diffs}
        out["arms"][arm.name] = entry
    return out


def run_study(
    config: DiagnoseStudyConfig,
    workdir: str | Path,
    progress: bool = False,
    should_stop: Callable[[], bool] | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train and measure every (arm, seed) not yet in ``workdir``'s result store, then summarise and report.

    Returns:
        ``{"config", "rows": {arm: {seed: row}}, "summary", "report"}``.
    """
    workdir = Path(workdir)
    device = resolve_device(config.runtime)
    splits = load_dataset(config.data.name, config.data.root)
    write_bytes_atomic(
        workdir / "config.yaml", yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False).encode()
    )
    store = ResultStore(workdir / STORE)
    done = {(r["config_hash"], r["trial_key"]): r for r in store.rows(KIND)}
    rows: dict[str, dict[int, dict[str, Any]]] = {}
    for arm in config.study.arms:
        chash = config.trial_hash(arm)
        for seed in range(config.seed, config.seed + config.study.seeds):
            key = f"{arm.name}/seed={seed}"
            row = done.get((chash, key))
            if row is None:
                t0 = time.perf_counter()
                row = run_trial(config, arm, seed, splits, workdir, device, progress, should_stop)
                store.add(KIND, chash, key, seed, row["metrics"], row["meta"])
                if log is not None:
                    m = row["metrics"]
                    log(f"{key}: test acc {m['test_accuracy']:.4f}, {time.perf_counter() - t0:.0f} s")
            rows.setdefault(arm.name, {})[seed] = row
    summary = summarize(config, rows)
    result = {"config": config.model_dump(mode="json"), "summary": summary, "rows": _json_rows(rows)}
    from poisonlab.diagnostics.report import write_study_report

    result["report"] = str(write_study_report(workdir / "report", result))
    return result


def _json_rows(rows: dict[str, dict[int, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    return {
        a: {str(s): {"metrics": r["metrics"], "layers": r["meta"]["layers"]} for s, r in v.items()}
        for a, v in rows.items()
    }
