"""The train experiment: ``train_experiment(config, workdir)`` trains, evaluates, stores and reports."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from poisonlab.config import ExperimentConfig, build
from poisonlab.data.dataset import Splits
from poisonlab.data.registry import load_dataset
from poisonlab.errors import CheckpointError
from poisonlab.experiments.job import environment, resolve_device, trainer_options
from poisonlab.experiments.store import ResultStore
from poisonlab.io.artifact import load_artifact, save_artifact
from poisonlab.io.atomic import write_bytes_atomic
from poisonlab.io.checkpoint import Checkpointer
from poisonlab.models.build import build_model
from poisonlab.rng import SeedTree
from poisonlab.training.evaluate import evaluate
from poisonlab.training.trainer import Trainer

MODEL_DIR = "model"
STORE = "results.sqlite"


def build_for(config: ExperimentConfig, splits: Splits, seeds: SeedTree, device: torch.device) -> nn.Module:
    """The configured model for a dataset, initialised from ``seeds``' "init" generator."""
    mean, std = splits.train.channel_stats()
    return build_model(
        config.model.name,
        splits.train.shape,
        splits.train.num_classes,
        seeds.generator("init"),
        config.model.width,
        config.model.norm,
        mean,
        std,
        device,
    )


def train_experiment(
    config: ExperimentConfig,
    workdir: str | Path,
    progress: bool = False,
    force_new: bool = False,
    should_stop: Callable[[], bool] | None = None,
) -> dict[str, Any]:
    """Train the configured model (resuming from ``workdir`` if interrupted), evaluate it on the test
    split, save it as an artifact, record a result row and write an HTML report.

    Returns:
        The result row: metrics, config hash, seeds, history, environment and timings.
    """
    workdir = Path(workdir)
    device = resolve_device(config.runtime)
    splits = load_dataset(config.data.name, config.data.root)  # fails before anything is written
    seeds = SeedTree(config.seed)
    model = build_for(config, splits, seeds, device)
    chash = config.config_hash()
    ckpt = Checkpointer(workdir / "checkpoints", chash, keep=config.runtime.keep_checkpoints)
    if force_new:
        ckpt.clear()
    elif ckpt.list():
        ckpt.load(ckpt.list()[-1])  # refuses a changed config before any work
    write_bytes_atomic(
        workdir / "config.yaml", yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False).encode()
    )
    trainer = Trainer(
        model,
        splits.train,
        config.train,
        seeds,
        checkpointer=ckpt,
        should_stop=should_stop,
        **trainer_options(config.runtime),
        progress=progress,
    )
    t0 = time.perf_counter()
    history = trainer.fit()
    wall = time.perf_counter() - t0
    test = evaluate(model, splits.test.to(device))
    train = evaluate(model, splits.train.to(device))
    row = {
        "experiment": "train",
        "config_hash": chash,
        "config": config.model_dump(mode="json"),
        "seeds": seeds.record(),
        "metrics": {
            "test_accuracy": test["accuracy"],
            "test_loss": test["loss"],
            "train_accuracy": train["accuracy"],
            "train_loss": train["loss"],
        },
        "history": history,
        "train_seconds": sum(h["seconds"] for h in history),
        "wall_seconds_this_process": wall,
        "environment": environment(device),
    }
    save_artifact(
        workdir / MODEL_DIR,
        "model",
        dict(model.state_dict()),
        {"config": row["config"], "config_hash": chash, "metrics": row["metrics"], "seeds": row["seeds"]},
    )
    ResultStore(workdir / STORE).add(
        "train",
        chash,
        f"seed={config.seed}",
        config.seed,
        row["metrics"],
        {k: row[k] for k in ("seeds", "history", "environment", "train_seconds")},
    )
    from poisonlab.report.train_report import write_train_report

    row["report"] = str(write_train_report(workdir / "report", row))
    return row


def load_trained(workdir: str | Path, device: torch.device | None = None) -> tuple[nn.Module, ExperimentConfig]:
    """The model saved by :func:`train_experiment` in ``workdir`` and its config."""
    tensors, meta = load_artifact(Path(workdir) / MODEL_DIR, "model")
    try:
        config = build(ExperimentConfig, meta["config"])
    except KeyError:
        raise CheckpointError(f"{workdir}/{MODEL_DIR}: manifest has no config") from None
    device = device or resolve_device(config.runtime)
    splits = load_dataset(config.data.name, config.data.root)
    model = build_for(config, splits, SeedTree(config.seed), device)
    try:
        model.load_state_dict(tensors)
    except RuntimeError as err:
        raise CheckpointError(
            f"{workdir}/{MODEL_DIR}: weights do not fit the model ({str(err).splitlines()[0]})"
        ) from None
    return model, config


def evaluate_workdir(workdir: str | Path, split: str = "test") -> dict[str, Any]:
    """Evaluate the trained model of ``workdir`` on its dataset's ``split``."""
    model, config = load_trained(workdir)
    splits = load_dataset(config.data.name, config.data.root)
    data = splits.test if split == "test" else splits.train
    device = next(model.parameters()).device
    return {"dataset": config.data.name, "split": split, **evaluate(model, data.to(device))}
