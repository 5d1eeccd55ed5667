"""Training one model for a DP study: the Trainer with or without the DP-SGD hook, resumable, same recipe.

Shared by the disparate-impact study and the privacy audit so both train exactly the way ``poisonlab train``
does (one Trainer loop, seeds from a SeedTree, atomic checkpoints in ``ckpt_dir``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn

from poisonlab.config import ExperimentConfig, TrainConfig
from poisonlab.data.dataset import Dataset
from poisonlab.defenses.dp.accounting import calibrate_noise, epsilon, sample_rate_for
from poisonlab.defenses.dp.dp_sgd import DPSGD
from poisonlab.experiments.job import trainer_options
from poisonlab.io.checkpoint import Checkpointer
from poisonlab.models.build import build_model
from poisonlab.rng import SeedTree
from poisonlab.training.hooks import TrainingHook
from poisonlab.training.trainer import Trainer, epoch_batches

__all__ = ["planned_epsilon", "planned_steps", "resolve_noise", "train_model"]


def planned_steps(recipe: TrainConfig, dataset_size: int) -> int:
    """Optimizer updates the Trainer takes: ``epochs * len(epoch_batches(N, batch, drop_last))``.

    DP-SGD replaces each batch by a Poisson sample but keeps the Trainer's number of steps per epoch, so this is
    the exact number of accounted updates.
    """
    return recipe.epochs * len(epoch_batches(dataset_size, recipe.batch_size, recipe.drop_last))


def resolve_noise(
    noise_multiplier: float,
    target_epsilon: float | None,
    recipe: TrainConfig,
    dataset_size: int,
    delta: float,
    accountant: str,
) -> float:
    """z itself, or (with a target) the smallest z whose epsilon after the planned updates is <= the target."""
    if target_epsilon is None:
        return float(noise_multiplier)
    q = sample_rate_for(recipe.batch_size, dataset_size)
    return calibrate_noise(target_epsilon, q, planned_steps(recipe, dataset_size), delta, accountant)


def planned_epsilon(noise_multiplier: float, recipe: TrainConfig, dataset_size: int, delta: float, acc: str) -> float:
    """The accountant's epsilon of a full DP-SGD run with this recipe on ``dataset_size`` examples."""
    q = sample_rate_for(recipe.batch_size, dataset_size)
    return epsilon(q, noise_multiplier, planned_steps(recipe, dataset_size), delta, acc)


def train_model(
    config: ExperimentConfig,
    train: Dataset,
    stats: tuple[tuple[float, ...], tuple[float, ...]],
    seeds: SeedTree,
    ckpt_dir: Path,
    device: torch.device,
    dp: DPSGD | None = None,
    extra_hooks: Sequence[TrainingHook] = (),
    progress: bool = False,
    should_stop: Callable[[], bool] | None = None,
) -> tuple[nn.Module, list[dict[str, float]]]:
    """Build the configured model (init from ``seeds``' "init") and train it on ``train``, resuming if possible.

    Args:
        config: model and recipe (``config.train``); the checkpoint is keyed by ``config.config_hash()``.
        train: the training set (already under-represented / with canaries).
        stats: (mean, std) of the input normalisation. Pass statistics that do not depend on the private data
            (e.g. of the full clean training split), or the normalisation itself would leak unaccounted.
        seeds: seeds of this run ("init", "data", "augment").
        ckpt_dir: checkpoint folder of this run.
        device: where to train.
        dp: a DPSGD hook for the private arm, None for the non-private one.
        extra_hooks: hooks after DP-SGD (e.g. statistics readers).

    Returns:
        (trained model, per-epoch history).
    """
    mean, std = stats
    model = build_model(
        config.model.name,
        train.shape,
        train.num_classes,
        seeds.generator("init"),
        config.model.width,
        config.model.norm,
        mean,
        std,
        device,
    )
    hooks: list[TrainingHook] = ([dp] if dp is not None else []) + list(extra_hooks)
    trainer = Trainer(
        model,
        train,
        config.train,
        seeds,
        hooks=hooks,
        checkpointer=Checkpointer(ckpt_dir, config.config_hash(), keep=config.runtime.keep_checkpoints),
        should_stop=should_stop,
        **trainer_options(config.runtime),
        progress=progress,
    )
    history = trainer.fit()
    return model, history
