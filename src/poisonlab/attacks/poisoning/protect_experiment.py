"""Secure-release experiments as pure functions of (config, workdir): protect a dataset, then evaluate it.

``protect_experiment`` trains the surrogates, protects the chosen ids (offline, or online batch by batch;
resumable) and writes ``protected/`` (artifact), ``report/protected.png`` (clean | protected | difference),
optionally every protected image as ``images/<id>.png``, a result row and ``config.yaml``.
``evaluate_protection_experiment`` reads that workdir and retrains victims (skipping those already in the
result store), protected vs noise control vs clean.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import yaml

from poisonlab.attacks.poisoning.availability import AvailabilityPoisoning, ProtectTask
from poisonlab.attacks.poisoning.online import online_protect, surrogate_recipe
from poisonlab.attacks.poisoning.poison_set import PoisonSet
from poisonlab.attacks.poisoning.protect_config import ProtectionExperimentConfig, load_protection_config
from poisonlab.attacks.poisoning.protect_report import protection_grid_png, summary_rows
from poisonlab.attacks.poisoning.protection_eval import ARMS, ProtectionVictim, VictimSpec, evaluate_protection
from poisonlab.attacks.poisoning.surrogates import train_surrogates
from poisonlab.budget import PoisonBudget
from poisonlab.data.dataset import Dataset
from poisonlab.data.registry import load_dataset
from poisonlab.errors import CheckpointError
from poisonlab.experiments.job import environment, resolve_device
from poisonlab.experiments.store import ResultStore
from poisonlab.io.atomic import write_bytes_atomic
from poisonlab.io.checkpoint import Checkpointer
from poisonlab.report.html import image, page, table
from poisonlab.rng import SeedTree
from poisonlab.training.evaluate import evaluate

PROTECTED = "protected"
STORE = "results.sqlite"
CONFIG = "config.yaml"


def choose_protected(train: Dataset, fraction: float, generator: torch.Generator) -> torch.Tensor:
    """The ids to protect, in a random order: an exact random subset of ``fraction`` of the training set.

    The order is the release (and poison batch) order, so each poison batch is a random, class-mixed sample
    like a victim's minibatch, even when the dataset is stored sorted by class."""
    k = PoisonBudget(fraction=fraction).resolve(len(train))
    return train.ids.cpu()[torch.randperm(len(train), generator=generator)[:k]]


def protect_experiment(
    config: ProtectionExperimentConfig,
    workdir: str | Path,
    progress: bool = False,
    force_new: bool = False,
    should_stop: Callable[[], bool] | None = None,
    export_images: bool = False,
) -> dict[str, Any]:
    """Protect the training set of ``config`` in ``workdir`` (resuming an interrupted run); returns the result row."""
    workdir = Path(workdir)
    p = config.protect
    device = resolve_device(config.runtime)
    splits = load_dataset(config.data.name, config.data.root)
    chash = config.config_hash()
    ckpt = Checkpointer(workdir / "craft-checkpoints", chash)
    if force_new:
        ckpt.clear()
        for name in ("surrogates", "online", PROTECTED):
            shutil.rmtree(workdir / name, ignore_errors=True)
    elif ckpt.list():
        ckpt.load(ckpt.list()[-1])  # refuses a changed config before any work
    write_bytes_atomic(workdir / CONFIG, yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False).encode())
    seeds = SeedTree(config.seed)
    train = splits.train
    ids = choose_protected(train, p.fraction, seeds.generator("selection"))
    if p.online:
        ps = online_protect(config, train, ids, seeds, workdir / "online", chash, device, should_stop, progress)
        surrogates: list[Any] = []
    else:
        surrogates = train_surrogates(
            config.model, surrogate_recipe(config), train, seeds, p.ensemble, p.stagger, device,
            workdir / "surrogates", chash, should_stop, progress, p.member_models(config.model),
        )  # fmt: skip
        crafter = AvailabilityPoisoning(
            p, config.crafting_augment(), checkpointer=ckpt, should_stop=should_stop, progress=progress
        )
        ps = crafter.craft(ProtectTask(train, ids), surrogates, seeds)
    ps = replace(
        ps,
        meta={**ps.meta, "dataset": config.data.name, "fraction": p.fraction, "online": p.online,
              "release_batches": p.release_batches, "config_hash": chash},
    )  # fmt: skip
    ps.save(workdir / PROTECTED)
    png = protection_grid_png(ps, train)
    write_bytes_atomic(workdir / "report" / "protected.png", png)
    if export_images:
        ps.export_images(workdir / "images", train)
    metrics = {
        "protected": len(ps),
        "fraction": p.fraction,
        "eps": p.eps,
        "max_abs_delta": float(ps.deltas.abs().max()),
        "mean_batch_loss": sum(ps.restart_losses) / len(ps.restart_losses),
        "batch_losses": list(ps.restart_losses),
        "label_map": ps.meta.get("label_map"),
        "surrogate_test_accuracy": [evaluate(m, splits.test.to(device))["accuracy"] for m in surrogates],
    }
    row = {
        "experiment": "protect",
        "config_hash": chash,
        "config": config.model_dump(mode="json"),
        "seeds": seeds.record(),
        "metrics": metrics,
        "environment": environment(device),
    }
    ResultStore(workdir / STORE).add("protect", chash, f"seed={config.seed}", config.seed, metrics, {})
    rows = [(k, v) for k, v in metrics.items() if k not in ("batch_losses", "surrogate_test_accuracy")]
    html = page(
        f"Protected release: {config.data.name}",
        [("Crafting", table(rows, ["quantity", "value"])), ("Protected samples", image(png, "protected"))],
    )
    write_bytes_atomic(workdir / "report" / "index.html", html.encode())
    row["report"] = str(workdir / "report" / "index.html")
    return row


def default_victims(channels: int) -> list[VictimSpec]:
    """ConvNet (width 16), MLP and LeNet; ResNet-18 too on colour images."""
    out = [VictimSpec("convnet", 16), VictimSpec("mlp"), VictimSpec("lenet")]
    return out + [VictimSpec("resnet18")] if channels == 3 else out


def evaluate_protection_experiment(
    workdir: str | Path,
    victims: int,
    models: Sequence[VictimSpec] | None = None,
    arms: Sequence[str] = ARMS,
    defense: str | None = None,
    defense_params: Mapping[str, Any] | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Retrain ``victims`` victims per (architecture, arm) on the release in ``workdir``; returns results and
    summary and writes ``report/evaluation.html``."""
    workdir = Path(workdir)
    if not (workdir / CONFIG).is_file():
        raise CheckpointError(f"{workdir / CONFIG}: not found; run 'poisonlab protect' with this workdir first")
    config = load_protection_config(workdir / CONFIG)
    splits = load_dataset(config.data.name, config.data.root)
    ps = PoisonSet.load(workdir / PROTECTED, splits.train)
    device = resolve_device(config.runtime)
    models = list(models or default_victims(splits.train.shape[0]))
    digest = hashlib.sha256(ps.poison_ids.numpy().tobytes() + ps.deltas.numpy().tobytes()).hexdigest()[:16]
    params = dict(defense_params or {})
    key_hash = f"{config.config_hash()}-{digest}"
    prefix = f"{defense or 'none'}{sorted(params.items()) if params else ''}"
    store = ResultStore(workdir / STORE)
    completed = {}
    for r in store.rows("protect-victim"):
        if r["config_hash"] == key_hash and r["trial_key"].startswith(prefix + "/"):
            res = ProtectionVictim(**r["meta"]["result"])
            completed[(res.model, res.arm, res.victim)] = res

    def record(res: ProtectionVictim) -> None:
        key = f"{prefix}/{res.model}/{res.arm}/victim-{res.victim}"
        store.add("protect-victim", key_hash, key, config.seed, {"accuracy": res.accuracy}, {"result": res.as_dict()})

    out = evaluate_protection(
        ps, splits, models, config.model.norm, config.train, victims, SeedTree(config.seed).child("evaluate"),
        arms, defense, params, device, completed, record, progress,
    )  # fmt: skip
    html = page(
        f"Protection: clean test accuracy of retrained victims (defense: {defense or 'none'})",
        [("Victims", table(summary_rows(out["summary"]), ["model", "arm", "accuracy / drop (t 95%)", "victims"]))],
    )
    write_bytes_atomic(workdir / "report" / "evaluation.html", html.encode())
    return {**out, "protected": len(ps), "eps": ps.eps, "defense": defense or "none",
            "report": str(workdir / "report" / "evaluation.html")}  # fmt: skip
