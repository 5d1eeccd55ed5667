"""Poisoning experiments as pure functions of (config, workdir): craft poisons, then evaluate them.

``craft_experiment`` trains the surrogates, chooses targets and poisons, crafts (resumable), and writes
``poisons/`` (artifact), ``report/`` (PNG grid + HTML), a result row and ``config.yaml``.
``evaluate_poisons_experiment`` reads that workdir, retrains victims (skipping those already in the result
store) and reports poison success against the random-noise control.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from poisonlab.attacks.poisoning.config import PoisoningExperimentConfig, load_poisoning_config
from poisonlab.attacks.poisoning.evaluate import VictimResult, evaluate_poisons
from poisonlab.attacks.poisoning.gradient_matching import GradientMatching, PoisonTask, Retrainer
from poisonlab.attacks.poisoning.poison_set import PoisonSet
from poisonlab.attacks.poisoning.scenarios import Scenario, pretrained_weights
from poisonlab.attacks.poisoning.selection import candidate_positions, choose_poisons, choose_targets
from poisonlab.attacks.poisoning.surrogates import build_victim_model, train_surrogates
from poisonlab.config import apply_overrides, build
from poisonlab.data.dataset import Dataset
from poisonlab.data.poisoned import PoisonedDataset
from poisonlab.data.registry import load_dataset
from poisonlab.errors import CheckpointError, ConfigError
from poisonlab.experiments.job import environment, resolve_device
from poisonlab.experiments.store import ResultStore
from poisonlab.io.atomic import write_bytes_atomic
from poisonlab.io.checkpoint import Checkpointer
from poisonlab.report.html import image, page, table
from poisonlab.rng import SeedTree
from poisonlab.training.evaluate import evaluate, predict_logits

POISONS = "poisons"
PRETRAINED = "pretrained"
STORE = "results.sqlite"
CONFIG = "config.yaml"


def craft_experiment(
    config: PoisoningExperimentConfig,
    workdir: str | Path,
    progress: bool = False,
    force_new: bool = False,
    should_stop: Callable[[], bool] | None = None,
    pretrained_dir: Path | None = None,
) -> dict[str, Any]:
    """Craft poisons for ``config`` in ``workdir`` (resuming an interrupted run); returns the result row.

    ``pretrained_dir`` caches the public pretrained model of the fine-tune/transfer scenarios (default
    ``workdir/pretrained``; trials share one)."""
    workdir = Path(workdir)
    p = config.poison
    device = resolve_device(config.runtime)
    splits = load_dataset(config.data.name, config.data.root)
    chash = config.config_hash()
    ckpt = Checkpointer(workdir / "craft-checkpoints", chash)
    if force_new:
        ckpt.clear()
        shutil.rmtree(workdir / "surrogates", ignore_errors=True)
    elif ckpt.list():
        ckpt.load(ckpt.list()[-1])  # refuses a changed config before any work
    write_bytes_atomic(workdir / CONFIG, yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False).encode())
    seeds = SeedTree(config.seed)
    target_ids, adv = choose_targets(splits.test, seeds.generator("target"), p.target_ids, p.targets, p.adv_class)
    targets = splits.test.subset(splits.test.positions_of(target_ids))
    scenario = load_scenario(config, splits, device, pretrained_dir or workdir / PRETRAINED, should_stop, progress)
    if scenario.pretrained is None:
        surrogates = train_surrogates(
            config.model, config.train, splits.train, seeds, p.ensemble, p.stagger, device,
            workdir / "surrogates", chash, should_stop, progress,
        )  # fmt: skip
    else:  # the attacker crafts on the public pretrained model itself
        surrogates = [scenario.surrogate(build_victim_model(config.model, splits.train, seeds, device))]
    candidates, poison_class = candidate_positions(
        splits.train, p.threat_model, targets.labels.tolist(), adv, seeds.generator("poison-class"), p.poison_class
    )
    poison_ids = choose_poisons(
        splits.train, p.poison_budget, candidates, seeds.generator("selection"), p.selection, surrogates
    )
    retrainer = poisoned_retrainer(config, splits.train, poison_ids, device, should_stop) if p.retrain_every else None
    crafter = make_crafter(config, ckpt, should_stop, progress, retrainer)
    ps = crafter.craft(PoisonTask(splits.train, poison_ids, targets, adv), surrogates, seeds)
    surrogate_view = [
        {
            "target_predictions": predict_logits(m, targets.to(device)).argmax(1).tolist(),
            "test_accuracy": evaluate(m, splits.test.to(device))["accuracy"],
        }
        for m in surrogates
    ]
    ps = replace(
        ps,
        meta={
            **ps.meta,
            "dataset": config.data.name,
            "threat_model": p.threat_model,
            "poison_class": poison_class,
            "selection": p.selection,
            "config_hash": chash,
            "target_labels": targets.labels.tolist(),
        },
    )
    ps.save(workdir / POISONS)
    png = ps.export_png(workdir / "report" / "poisons.png", splits.train)
    metrics = {
        "poisons": len(ps),
        "targets": len(target_ids),
        "adv_class": adv,
        "best_loss": min(ps.restart_losses),
        "restart_losses": list(ps.restart_losses),
        "max_abs_delta": float(ps.deltas.abs().max()),
    }
    row = {
        "experiment": "craft",
        "config_hash": chash,
        "config": config.model_dump(mode="json"),
        "seeds": seeds.record(),
        "metrics": metrics,
        "target_ids": target_ids.tolist(),
        "poison_ids": ps.poison_ids.tolist(),
        "surrogates": surrogate_view,
        "environment": environment(device),
    }
    ResultStore(workdir / STORE).add(
        "craft", chash, f"seed={config.seed}", config.seed, metrics, {k: row[k] for k in ("seeds", "surrogates")}
    )
    rows = [(k, v) for k, v in metrics.items() if k != "restart_losses"]
    html = page(
        f"Poisons: {p.recipe} on {config.data.name}",
        [("Crafting", table(rows, ["quantity", "value"])), ("Poisons", image(png, "poisons"))],
    )
    write_bytes_atomic(workdir / "report" / "index.html", html.encode())
    row["report"] = str(workdir / "report" / "index.html")
    return row


def evaluate_poisons_experiment(
    workdir: str | Path,
    victims: int,
    control: bool = True,
    progress: bool = False,
    clean: bool = True,
    pretrained_dir: Path | None = None,
    victim_overrides: Sequence[str] = (),
) -> dict[str, Any]:
    """Retrain ``victims`` victims per arm (poisoned; noise control; clean) on the poisons of ``workdir``;
    returns results and summary.

    ``victim_overrides`` (``train.*``/``model.*`` ``key=value``, from-scratch only) let the victims train
    with another recipe or architecture than the one the attacker's surrogates assumed (a grey-box victim);
    their results are stored under a key of their own."""
    workdir = Path(workdir)
    if not (workdir / CONFIG).is_file():
        raise CheckpointError(f"{workdir / CONFIG}: not found; run 'poisonlab craft' with this workdir first")
    config = victim_config(load_poisoning_config(workdir / CONFIG), victim_overrides)
    splits = load_dataset(config.data.name, config.data.root)
    ps = PoisonSet.load(workdir / POISONS, splits.train)
    device = resolve_device(config.runtime)
    digest = hashlib.sha256(ps.poison_ids.numpy().tobytes() + ps.deltas.numpy().tobytes()).hexdigest()[:16]
    key_hash = f"{config.config_hash()}-{digest}"
    store = ResultStore(workdir / STORE)
    completed = {}
    for r in store.rows("poison-victim"):
        if r["config_hash"] == key_hash:
            res = VictimResult(**r["meta"]["result"])
            completed[(res.arm, res.victim)] = res

    def record(res: VictimResult) -> None:
        metrics = {"success_rate": sum(res.successes) / len(res.successes), "clean_accuracy": res.clean_accuracy}
        store.add(
            "poison-victim", key_hash, f"{res.arm}/victim-{res.victim}", config.seed, metrics, {"result": res.as_dict()}
        )

    scenario = load_scenario(config, splits, device, pretrained_dir or workdir / PRETRAINED, None, progress)
    out = evaluate_poisons(
        ps, splits, config.model, config.train, victims, SeedTree(config.seed).child("evaluate"), control,
        device, completed, record, progress, clean, scenario,
    )  # fmt: skip
    s = out["summary"]
    rows = [
        (arm, f"{v['success']['rate']:.3f} [{v['success']['lo']:.3f}, {v['success']['hi']:.3f}]",
         f"{v['success']['successes']}/{v['success']['n']}", v["clean_accuracy"], v["victims"])
        for arm, v in s.items()
    ]  # fmt: skip
    sections = [
        ("Retrained victims", table(rows, ["arm", "success (Wilson 95%)", "hits", "clean accuracy", "victims"]))
    ]
    if victim_overrides:
        sections.append(
            ("Victim recipe (differs from the surrogates')", table([(o,) for o in victim_overrides], ["override"]))
        )
    html = page("Poison success", sections)
    name = "evaluation.html" if not victim_overrides else f"evaluation-{config.config_hash()}.html"
    write_bytes_atomic(workdir / "report" / name, html.encode())
    return {
        **out,
        "poisons": len(ps),
        "adv_class": ps.adv_class,
        "victim_overrides": list(victim_overrides),
        "report": str(workdir / "report" / name),
    }


VICTIM_SECTIONS = ("train.", "model.")


def victim_config(config: PoisoningExperimentConfig, victim_overrides: Sequence[str]) -> PoisoningExperimentConfig:
    """``config`` with the victims' own recipe/architecture (``train.*``/``model.*`` overrides); the crafting
    settings cannot change after the poisons exist, and pretrained scenarios keep the public model's."""
    if not victim_overrides:
        return config
    for item in victim_overrides:
        if not item.strip().startswith(VICTIM_SECTIONS):
            raise ConfigError(f"--victim-set {item!r}: only train.* and model.* describe the victim")
    if config.poison.scenario != "from-scratch":
        raise ConfigError(f"--victim-set: scenario {config.poison.scenario} victims start from the public model")
    return build(PoisoningExperimentConfig, apply_overrides(config.model_dump(mode="json"), list(victim_overrides)))


def poisoned_retrainer(
    config: PoisoningExperimentConfig,
    train: Dataset,
    poison_ids: torch.Tensor,
    device: Any,
    should_stop: Callable[[], bool] | None,
) -> Retrainer:
    """Gradient matching's ``retrain(delta, seeds)``: the surrogate ensemble of ``config`` (same size, same
    staggered epochs, victim recipe) trained from a fresh init on ``train`` with ``delta`` at ``poison_ids``."""
    p = config.poison

    def retrain(delta: torch.Tensor, seeds: SeedTree) -> list[nn.Module]:
        view = PoisonedDataset(train, delta_ids=poison_ids.to(train.device), deltas=delta.to(train.device))
        return train_surrogates(
            config.model, config.train, train, seeds, p.ensemble, p.stagger, device,
            should_stop=should_stop, fit_on=view.materialize(),
        )  # fmt: skip

    return retrain


def make_crafter(
    config: PoisoningExperimentConfig,
    checkpointer: Checkpointer | None,
    should_stop: Callable[[], bool] | None,
    progress: bool,
    retrainer: Retrainer | None = None,
) -> Any:
    """The crafter of ``config.poison.recipe`` (all share ``craft(task, surrogates, seeds) -> PoisonSet``);
    ``retrainer`` serves gradient matching's ``retrain_every``."""
    p = config.poison
    if p.recipe == "metapoison":
        from poisonlab.attacks.poisoning.metapoison import MetaPoison

        return MetaPoison(p, config.train, checkpointer, should_stop, progress=progress)
    if p.recipe == "feature-collision":
        from poisonlab.attacks.poisoning.feature_collision import FeatureCollision

        return FeatureCollision(p, checkpointer, should_stop, progress=progress)
    return GradientMatching(p, checkpointer, should_stop, progress=progress, retrainer=retrainer)


def load_scenario(
    config: PoisoningExperimentConfig,
    splits: Any,
    device: Any,
    folder: Path,
    should_stop: Callable[[], bool] | None,
    progress: bool,
) -> Scenario:
    """The victim scenario; fine-tune/transfer train (or load from ``folder``) the public pretrained model."""
    p = config.poison
    if p.scenario == "from-scratch":
        return Scenario()
    public = json.dumps(config.model_dump(mode="json", include={"data", "model", "train"}), sort_keys=True)
    key = hashlib.sha256(f"{public}/{p.pretrained_seed}".encode()).hexdigest()[:16]  # not the trial's seed
    weights = pretrained_weights(
        config.model, config.train, splits.train, p.pretrained_seed, device, folder, key, should_stop, progress
    )
    return Scenario(p.scenario, weights)
