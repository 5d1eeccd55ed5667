"""Online secure release: protect the data batch by batch as it is released, the surrogates training further on
what has been released between batches. Every stage (surrogate weights, crafted batch) is an artifact, so a
killed run resumes where it stopped and ends bit-identical on CPU."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn

from poisonlab.attacks.poisoning.availability import AvailabilityPoisoning, ProtectTask
from poisonlab.attacks.poisoning.poison_set import PoisonSet
from poisonlab.attacks.poisoning.protect_config import ProtectionExperimentConfig
from poisonlab.attacks.poisoning.surrogates import _load_weights, train_surrogates
from poisonlab.data.dataset import Dataset
from poisonlab.io.artifact import save_artifact
from poisonlab.io.checkpoint import Checkpointer
from poisonlab.rng import SeedTree
from poisonlab.training.trainer import Trainer


def merge_releases(parts: Sequence[PoisonSet]) -> PoisonSet:
    """One poison set holding every part's ids and deltas, in order (the parts share eps and recipe)."""
    first = parts[0]
    ids = torch.cat([p.poison_ids for p in parts])
    deltas = torch.cat([p.deltas for p in parts])
    losses = tuple(v for p in parts for v in p.restart_losses)
    merged = PoisonSet(ids, deltas, first.target_ids, first.adv_class, first.eps, first.recipe, first.seeds, losses)
    return merged.with_deltas(deltas, **first.meta, release_batches=len(parts))


def released_view(train: Dataset, parts: Sequence[PoisonSet], protected: bool) -> Dataset:
    """The released samples so far, as their clean copies or with their protective deltas."""
    merged = merge_releases(parts)
    base = train.subset(train.positions_of(merged.poison_ids))
    return merged.to_view(base).materialize() if protected else base


def surrogate_recipe(config: ProtectionExperimentConfig):  # noqa: ANN201  (TrainConfig)
    """The surrogate recipe: the train section, shortened to ``protect.surrogate_epochs`` when given."""
    epochs = config.protect.surrogate_epochs
    return config.train if epochs is None else config.train.model_copy(update={"epochs": epochs})


def update_surrogates(
    members: list[nn.Module],
    data: Dataset,
    config: ProtectionExperimentConfig,
    seeds: SeedTree,
    folder: Path,
    config_hash: str,
    should_stop: Callable[[], bool] | None = None,
    progress: bool = False,
) -> list[nn.Module]:
    """Train each member ``protect.update_epochs`` more epochs on ``data`` (fresh optimiser of the surrogate
    recipe), checkpointed under ``folder/surrogate-<i>``; weights already saved there are loaded instead."""
    recipe = surrogate_recipe(config).model_copy(update={"epochs": config.protect.update_epochs})
    for i, net in enumerate(members):
        sub = folder / f"surrogate-{i}"
        if (sub / "model").is_dir():
            _load_weights(net, sub / "model", config_hash)
        else:
            ckpt = Checkpointer(sub / "checkpoints", config_hash)
            member_seeds = seeds.child(f"member-{i}")
            Trainer(
                net, data, recipe, member_seeds, checkpointer=ckpt, should_stop=should_stop, progress=progress
            ).fit()
            save_artifact(sub / "model", "model", dict(net.state_dict()), {"config_hash": config_hash, "member": i})
        net.eval()
    return members


def online_protect(
    config: ProtectionExperimentConfig,
    train: Dataset,
    protect_ids: torch.Tensor,
    seeds: SeedTree,
    root: str | Path,
    config_hash: str,
    device: torch.device | str = "cpu",
    should_stop: Callable[[], bool] | None = None,
    progress: bool = False,
) -> PoisonSet:
    """Protect ``protect_ids`` in ``protect.release_batches`` consecutive release batches.

    Batch 0 is crafted on surrogates trained (surrogate recipe) on its own clean images, the only data the owner
    holds at that time. Before batch b > 0 the surrogates train ``update_epochs`` more epochs on batches
    0..b-1 as released (``online_update``: their clean copies or the protected images). Each batch's crafting
    checkpoints under ``root/craft-<b>`` and is saved as ``root/release-<b>``; surrogate stages under
    ``root/stage-<b>``.

    Returns:
        The merged poison set of all release batches.
    """
    p = config.protect
    root = Path(root)
    online = seeds.child("online")
    parts: list[PoisonSet] = []
    members: list[nn.Module] = []
    for b, batch_ids in enumerate(torch.tensor_split(protect_ids.cpu(), p.release_batches)):
        stage = root / f"stage-{b}"
        if b == 0:
            first = train.subset(train.positions_of(batch_ids))
            members = train_surrogates(
                config.model, surrogate_recipe(config), first, online, p.ensemble, p.stagger, device, stage,
                config_hash, should_stop, progress, p.member_models(config.model),
            )  # fmt: skip
        else:
            released = released_view(train, parts, p.online_update == "protected")
            members = update_surrogates(
                members, released, config, online.child(f"update-{b}"), stage, config_hash, should_stop, progress
            )
        release = root / f"release-{b}"
        if (release / "manifest.json").is_file():
            parts.append(PoisonSet.load(release, train))
            continue
        crafter = AvailabilityPoisoning(
            p, config.crafting_augment(), checkpointer=Checkpointer(root / f"craft-{b}", config_hash),
            should_stop=should_stop, progress=progress,
        )  # fmt: skip
        # the class-targeted permutation is fixed by the first batch, so every batch pairs classes the same way
        fixed = parts[0].meta.get("label_map") if parts else None
        task = ProtectTask(train, batch_ids, None if fixed is None else torch.tensor(fixed, dtype=torch.long))
        part = crafter.craft(task, members, seeds.child(f"release-{b}"))
        part.save(release)
        parts.append(part)
    return merge_releases(parts)
