"""Surrogate models for crafting: trained on clean data with the normal Trainer and the victim's recipe.

Scenario "from-scratch" (Witches' Brew): each surrogate is a fresh model trained with the victim recipe.
A "staggered" ensemble stops member i after i epochs of that recipe (the reference's ``--stagger``:
``stagger_list = range(ensemble)``, so member 0 is the untrained initialisation), keeping the recipe's
learning-rate schedule of the full run. The reference's two commented-out alternatives are kept as options:
``"spread"`` spaces the members evenly from the initialisation to the fully trained model
(``linspace(0, epochs, E)``) and ``"inbetween"`` leaves both ends out (``linspace(0, epochs, E + 2)[1:-1]``).
The fine-tune and transfer scenarios start from a pretrained model instead (``scenarios.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn

from poisonlab.attacks.poisoning.config import Stagger
from poisonlab.config import ModelConfig, TrainConfig
from poisonlab.data.dataset import Dataset
from poisonlab.errors import CheckpointError
from poisonlab.io.artifact import load_artifact, save_artifact
from poisonlab.io.checkpoint import Checkpointer
from poisonlab.models.build import build_model
from poisonlab.rng import SeedTree
from poisonlab.training.trainer import Trainer


def stagger_epochs(epochs: int, ensemble: int, stagger: Stagger) -> list[int]:
    """Epochs each member trains: all ``epochs``; or ``0, 1, ..., E-1`` (capped at ``epochs``) when staggered
    (``True``/``"first"``); or ``int(linspace(0, epochs, E))`` (``"spread"``); or ``int(linspace(0, epochs,
    E + 2))`` without its ends (``"inbetween"``). Truncation to int as in the reference."""
    if not stagger:
        return [epochs] * ensemble
    if stagger is True or stagger == "first":
        return [min(i, epochs) for i in range(ensemble)]
    if stagger == "spread":
        return [epochs * i // (ensemble - 1) if ensemble > 1 else epochs for i in range(ensemble)]
    if stagger == "inbetween":
        return [epochs * i // (ensemble + 1) for i in range(1, ensemble + 1)]
    raise ValueError(f"stagger = {stagger!r}, expected false, true, first, spread or inbetween")


def build_victim_model(
    model: ModelConfig, train: Dataset, seeds: SeedTree, device: torch.device | str = "cpu"
) -> nn.Module:
    """The configured architecture, normalised with the clean training set's channel statistics (fixed
    dataset constants, as in the reference) and initialised from ``seeds``' "init" generator."""
    mean, std = train.channel_stats()
    return build_model(
        model.name, train.shape, train.num_classes, seeds.generator("init"), model.width, model.norm, mean, std, device
    )


def train_surrogates(
    model: ModelConfig,
    recipe: TrainConfig,
    train: Dataset,
    seeds: SeedTree,
    ensemble: int = 1,
    stagger: Stagger = False,
    device: torch.device | str = "cpu",
    workdir: str | Path | None = None,
    config_hash: str = "",
    should_stop: Callable[[], bool] | None = None,
    progress: bool = False,
    models: Sequence[ModelConfig] | None = None,
    fit_on: Dataset | None = None,
) -> list[nn.Module]:
    """Train ``ensemble`` surrogates on the clean ``train`` set (member i from ``seeds.child("surrogate-i")``).
    With ``models``, member i has architecture ``models[i]`` (a mixed ensemble; ``ensemble`` is then
    ``len(models)``). With ``fit_on``, they train on that set instead (e.g. the poisoned one) but keep the
    normalisation constants of ``train``.

    With ``workdir``, each member checkpoints to ``workdir/surrogate-<i>/checkpoints`` (a killed run resumes)
    and is saved as a model artifact ``workdir/surrogate-<i>/model``, which later calls load instead of
    retraining (refused if it was written under another ``config_hash``).

    Returns:
        The trained models, in eval mode.
    """
    members = []
    archs = list(models) if models else [model] * ensemble
    for i, epochs in enumerate(stagger_epochs(recipe.epochs, len(archs), stagger)):
        sub = seeds.child(f"surrogate-{i}")
        net = build_victim_model(archs[i], train, sub, device)
        folder = None if workdir is None else Path(workdir) / f"surrogate-{i}"
        if folder is not None and (folder / "model").is_dir():
            _load_weights(net, folder / "model", config_hash)
        else:
            ckpt = None if folder is None else Checkpointer(folder / "checkpoints", config_hash)
            data = train if fit_on is None else fit_on
            trainer = Trainer(net, data, recipe, sub, checkpointer=ckpt, should_stop=should_stop, progress=progress)
            # Stop after ``epochs`` of the full recipe: the optimiser and schedule were built for
            # ``recipe.epochs``; only the loop bound changes.
            trainer.recipe = recipe.model_copy(update={"epochs": epochs}) if epochs < recipe.epochs else recipe
            if epochs > 0:
                trainer.fit()
            if folder is not None:
                meta = {"config_hash": config_hash, "epochs": epochs, "member": i, "seeds": sub.record()}
                save_artifact(folder / "model", "model", dict(net.state_dict()), meta)
        members.append(net.eval())
    return members


def _load_weights(net: nn.Module, path: Path, config_hash: str) -> None:
    tensors, meta = load_artifact(path, "model")
    if meta.get("config_hash") != config_hash:
        raise CheckpointError(
            f"{path}: surrogate written under config {meta.get('config_hash')}, this run is {config_hash}; "
            "use --force-new to start over"
        )
    try:
        net.load_state_dict(tensors)
    except RuntimeError as err:
        raise CheckpointError(f"{path}: weights do not fit the model ({str(err).splitlines()[0]})") from None
