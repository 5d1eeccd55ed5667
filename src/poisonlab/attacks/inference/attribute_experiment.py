"""Attribute-inference trials, clean versus Truth-Serum-poisoned, paired on the same victims' data and seeds.

Trial t (root seed ``config.seed + t``) draws the victim's training set (a random ``member_fraction`` of the
dataset's training split), ``targets`` target records among its members, and for each reference model a
random ``member_fraction`` of the split without the targets. Each arm trains a fresh victim and fresh
reference models (same initialisation seeds in both arms) on those sets plus the arm's poisons, queries them
on every completion of every target and infers the attribute. One result row per trial in
``workdir/results.sqlite``; a rerun skips recorded trials.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from pydantic import Field
from torch import nn

from poisonlab.attacks.inference.attribute import (
    AttributeInferenceConfig,
    attribute_results,
    calibrated_scores,
    completion_confidences,
    truth_serum_attribute_poisons,
)
from poisonlab.config import (
    DataConfig,
    ExperimentConfig,
    ModelConfig,
    TrainConfig,
    apply_overrides,
    build,
    load_yaml,
)
from poisonlab.data.dataset import Dataset
from poisonlab.data.poisoned import PoisonedDataset
from poisonlab.data.registry import load_dataset
from poisonlab.data.tabular import attribute_values, tabular_schema
from poisonlab.errors import ConfigError, Interrupted
from poisonlab.rng import SeedTree
from poisonlab.training.evaluate import evaluate
from poisonlab.training.many import train_many

KIND = "attribute-inference"
STRATEGY = "fused"  # K tiny MLPs as one batched module: several times faster than one by one on CPU


class AttributeExperimentConfig(ExperimentConfig):
    """An attribute-inference experiment: the usual sections with tabular defaults, plus ``attack``."""

    data: DataConfig = DataConfig(name="fair")
    model: ModelConfig = ModelConfig(name="mlp", width=256, norm="none")
    train: TrainConfig = TrainConfig(
        optimizer="adam", lr=1e-3, nesterov=False, weight_decay=0, epochs=60, batch_size=64, schedule="none"
    )
    attack: AttributeInferenceConfig = AttributeInferenceConfig()
    trials: int = Field(3, ge=1, le=1000, description="independent trials (root seeds seed .. seed+trials-1)")

    def config_hash(self) -> str:
        """Hash of what changes a trial's result: not ``runtime``, nor ``trials`` (more trials extend a run)."""
        payload = self.model_dump(mode="json")
        payload.pop("runtime"), payload.pop("trials")
        return hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def load_attribute_config(
    path: str | Path | None = None, overrides: list[str] | None = None
) -> AttributeExperimentConfig:
    """AttributeExperimentConfig from an optional YAML file and ``a.b=c`` overrides; errors name the field."""
    data = merge_sections(AttributeExperimentConfig().model_dump(mode="json"), load_yaml(path) if path else {})
    config = build(AttributeExperimentConfig, apply_overrides(data, overrides or []))
    tabular_schema(config.data.name).attribute(config.attack.attribute, "attack.attribute")
    return config


def merge_sections(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """``update`` laid over ``base`` section by section, so a partial section (``train.epochs=5``) keeps this
    experiment's defaults for the other fields instead of the generic section's."""
    out = dict(base)
    for k, v in update.items():
        out[k] = merge_sections(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _train_all(datasets: list[Dataset], config: AttributeExperimentConfig, seeds: list[SeedTree]) -> list[nn.Module]:
    """Victim and reference models: member k equals ``Trainer(build_model(.., seeds[k].generator("init")),
    datasets[k], config.train, seeds[k]).fit()``; trained as one fused module (the sets have equal sizes)."""
    d = datasets[0]
    models = train_many(
        config.model, d.shape, d.num_classes, None, None, datasets, config.train, seeds, strategy=STRATEGY
    )
    return [m.eval() for m in models]


def _subset_positions(n: int, k: int, generator: torch.Generator, exclude: torch.Tensor | None = None) -> torch.Tensor:
    allowed = torch.ones(n, dtype=torch.bool)
    if exclude is not None:
        allowed[exclude] = False
    pos = torch.nonzero(allowed).squeeze(1)
    if k > len(pos):
        raise ConfigError(f"attack.member_fraction: {k} members requested from {len(pos)} records")
    return pos[torch.randperm(len(pos), generator=generator)[:k]].sort().values


def attribute_trial(
    config: AttributeExperimentConfig,
    seed: int,
    arms: dict[str, int],
    should_stop: Callable[[], bool] | None = None,
) -> dict[str, Any]:
    """One trial: ``arms`` maps an arm name to its replicas per candidate (0 = clean); returns per-arm results.

    Every arm shares the victim's members, the targets, the references' data and all initialisation seeds.
    """
    a = config.attack
    splits = load_dataset(config.data.name, config.data.root)
    column = tabular_schema(config.data.name).attribute(a.attribute, "attack.attribute")
    pool, tree = splits.train, SeedTree(seed)
    n_members = int(round(a.member_fraction * len(pool)))
    if a.targets > n_members:
        raise ConfigError(f"attack.targets: {a.targets} targets but the victim has only {n_members} members")
    members = _subset_positions(len(pool), n_members, tree.generator("members"))
    targets = members[torch.randperm(n_members, generator=tree.generator("targets"))[: a.targets]]
    x_t, y_t = pool.images[targets], pool.labels[targets]
    truth = attribute_values(x_t, column)
    ref_sets = [
        _subset_positions(len(pool), n_members, tree.generator(f"reference/{k}/members"), exclude=targets)
        for k in range(a.reference_models)
    ]
    out: dict[str, Any] = {
        "seed": seed,
        "target_ids": pool.ids[targets].tolist(),
        "truth": truth.tolist(),
        "prior_accuracy": float(torch.bincount(attribute_values(pool.images, column)).max()) / len(pool),
    }
    for arm, replicas in arms.items():
        t0 = time.perf_counter()
        poisons = truth_serum_attribute_poisons(
            x_t, y_t, column, replicas, a.poison_label_strategy, pool.num_classes, tree.generator("poison_labels")
        )

        def poisoned(positions: torch.Tensor, p: Any = poisons) -> Dataset:
            return PoisonedDataset(pool.subset(positions), extra_images=p.features, extra_labels=p.labels).materialize()

        if should_stop is not None and should_stop():
            raise Interrupted("stopped between arms; rerun the same command to resume from the last finished trial")
        seeds = [tree.child("victim")] + [tree.child(f"reference/{k}") for k in range(len(ref_sets))]
        victim, *refs = _train_all([poisoned(members)] + [poisoned(s) for s in ref_sets], config, seeds)
        phi_victim = completion_confidences(victim, x_t, y_t, column)
        res: dict[str, Any] = {
            "replicas": replicas,
            "poisons": len(poisons.labels),
            "test_accuracy": evaluate(victim, splits.test)["accuracy"],
            "confidence": attribute_results(phi_victim, truth),
        }
        if refs:
            phi_ref = torch.stack([completion_confidences(r, x_t, y_t, column) for r in refs])
            res["calibrated"] = attribute_results(calibrated_scores(phi_victim, phi_ref, a.fixed_variance), truth)
        res["seconds"] = time.perf_counter() - t0
        out[arm] = res
    return out


def dryrun_config(config: AttributeExperimentConfig) -> AttributeExperimentConfig:
    """A seconds-long smoke version: 1 trial, 4 targets, 1 reference model, 2 epochs of a narrow MLP."""
    return config.model_copy(
        update={
            "trials": 1,
            "model": config.model.model_copy(update={"width": 16}),
            "train": config.train.model_copy(update={"epochs": 2}),
            "attack": config.attack.model_copy(update={"targets": 4, "reference_models": 1, "member_fraction": 0.2}),
        }
    )


def run_attribute_experiment(
    config: AttributeExperimentConfig,
    workdir: str | Path,
    progress: bool = False,
    should_stop: Callable[[], bool] | None = None,
) -> dict[str, Any]:
    """Run (or resume) ``config.trials`` trials of the clean and poisoned arms; write results and the report."""
    from poisonlab.attacks.inference.privacy_report import (
        ATTRIBUTE_HEADER,
        attribute_plot,
        attribute_rows,
        html_table,
        summarize_attribute,
        write_report,
    )
    from poisonlab.experiments.store import run_stored_trials

    workdir = Path(workdir)
    chash = config.config_hash()
    arms = {"clean": 0, "poisoned": config.attack.replicas_per_candidate}
    rows = run_stored_trials(
        workdir / "results.sqlite",
        KIND,
        chash,
        [config.seed + t for t in range(config.trials)],
        lambda t: attribute_trial(config, config.seed + t, arms, should_stop),
        lambda row: {f"{arm}_confidence_accuracy": row[arm]["confidence"]["accuracy"] for arm in arms},
        progress,
    )
    summary = summarize_attribute(rows)
    column = tabular_schema(config.data.name).attribute(config.attack.attribute)
    result = {"config_hash": chash, "config": config.model_dump(mode="json"), "summary": summary,
              "attribute_values": list(column.values), "trials": rows}  # fmt: skip
    result["report"] = str(
        write_report(
            workdir,
            f"Attribute inference: {config.attack.attribute} on {config.data.name}",
            result,
            attribute_plot(summary, 1 / len(column.values)),
            html_table(attribute_rows(summary), ATTRIBUTE_HEADER),
        )
    )
    return result
